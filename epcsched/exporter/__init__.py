"""Node EPC exporter: the kernel's EPC figures on /metrics, for Prometheus and the scheduler."""
