"""Offline simulations: replay a workload through the real policy core on a simulated clock.

`epcsched simulate SCENARIO.yaml` loads a scenario (`scenario`), builds its pods (`workload`),
runs each policy (`engine`, with the baselines of `baselines`), computes a proven lower bound
on nodes (`bound`) and writes `results.json`, `summary.md` and plots (`report`).
"""
