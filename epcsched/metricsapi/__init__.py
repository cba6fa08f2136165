"""EPC metrics for the HorizontalPodAutoscaler: `epcsched metrics-api`, an aggregated API server.

`command.py` (flags in, one-line errors out), `app.py` (the aiohttp app: authentication,
authorisation, routes), and the parts they use: `values.py` and `selectors.py` (pure: what each
metric is and how it is computed), `wire.py` (URLs and documents), `index.py` (pods and nodes by
informer), `prometheus.py` (cached queries), `auth.py` (front proxy, TokenReview,
SubjectAccessReview) and `tls.py` (serving TLS, handshake refusals logged). DESIGN.md section 5b.
"""
