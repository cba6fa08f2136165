"""The pure policy core: fit, scores and plans over a cluster snapshot.

Nothing here performs I/O, reads a clock or imports aiohttp, kubernetes-asyncio or Prometheus
code; the extender, the autoscaler and the simulator all call these same functions.
"""
