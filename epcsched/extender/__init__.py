"""The scheduler extender: kube-scheduler's HTTP callout for EPC filter, scores and bind."""
