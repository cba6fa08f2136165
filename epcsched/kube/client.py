"""How epcsched reaches the Kubernetes API: a kubeconfig file, or the pod's service account.

Loading the configuration is separate from opening a client: commands load (and validate) it
before they start serving, so a bad kubeconfig is one clear error at startup, while the HTTP
session itself is opened later on the event loop that uses it.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException


class KubeConfigError(ValueError):
    """No usable API server configuration; the message says what is missing or wrong."""


def in_cluster() -> bool:
    """True when running in a pod, where the service account reaches the API."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


#: Where Kubernetes mounts a pod's service account token and the cluster CA.
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


async def load_configuration(
    kubeconfig: str | Path | None = None,
    *,
    context: str | None = None,
    service_account: Path = SERVICE_ACCOUNT,
) -> client.Configuration:
    """The client configuration from `kubeconfig`, or in-cluster when it is None."""
    configuration = client.Configuration()
    if kubeconfig is not None:
        path = Path(kubeconfig)
        if not path.is_file():
            raise KubeConfigError(f"{path}: no such kubeconfig file")
        try:
            await config.load_kube_config(
                config_file=str(path), context=context, client_configuration=configuration
            )
        except (ConfigException, ValueError, TypeError, KeyError, OSError, yaml.YAMLError) as exc:
            raise KubeConfigError(f"{path}: not a usable kubeconfig: {exc}") from None
        return configuration
    if not in_cluster():
        raise KubeConfigError(
            "no kubeconfig given and not running in a pod (KUBERNETES_SERVICE_HOST is unset)"
        )
    try:
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration,
            token_filename=str(service_account / "token"),
            cert_filename=str(service_account / "ca.crt"),
        )
    except ConfigException as exc:
        raise KubeConfigError(f"in-cluster configuration: {exc}") from None
    return configuration


def describe(configuration: client.Configuration) -> str:
    """The API server address, for logs and `/readyz`."""
    return str(configuration.host)
