"""Measured EPC from Prometheus: usage and pressure per node, fed into the live snapshot."""

from epcsched.telemetry.poller import Telemetry

__all__ = ["Telemetry"]
