"""The EPC node-pool autoscaler: an async shell that observes the cluster, asks the pure planner
and state machine in `epcsched.core` what to do, and acts through node-pool providers."""
