"""Node-pool providers: how the autoscaler reads and sets a pool's size on each platform."""
