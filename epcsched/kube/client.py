"""How epcsched reaches the Kubernetes API: a kubeconfig file, or the pod's service account.

Loading the configuration is separate from opening a client: commands load (and validate) it
before they start serving, so a bad kubeconfig is one clear error at startup, while the HTTP
session itself is opened later on the event loop that uses it.

Like client-go's `rest.Config`, the configuration carries a client-side rate limit (`--kube-api-qps`
and `--kube-api-burst`, a token bucket shared by every client built from it with `api_client`),
so a busy controller cannot flood the API server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException


class KubeConfigError(ValueError):
    """No usable API server configuration; the message says what is missing or wrong."""


DEFAULT_QPS = 50.0
DEFAULT_BURST = 100
"""kube-scheduler's defaults: the extender binds at the scheduler's pace."""


class RateLimiter:
    """A token bucket, as client-go's `flowcontrol.NewTokenBucketRateLimiter(qps, burst)`:
    up to `burst` requests at once, then `qps` a second."""

    def __init__(
        self, qps: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("qps must be positive and burst at least 1")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.waited = 0.0
        """Seconds requests have spent waiting for a token, in total."""

    def delay(self) -> float:
        """Take a token; the seconds to wait before using it (0 when one was free)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1
        wait = 0.0 if self._tokens >= 0 else -self._tokens / self.qps
        self.waited += wait
        return wait

    async def acquire(self) -> None:
        wait = self.delay()
        if wait > 0:
            await asyncio.sleep(wait)


class KubeConfiguration(client.Configuration):
    """kubernetes-asyncio's configuration plus the rate limit its clients share."""

    rate_limiter: RateLimiter | None = None


class _LimitedApiClient(client.ApiClient):
    def __init__(self, configuration: KubeConfiguration, limiter: RateLimiter) -> None:
        super().__init__(configuration)
        self._limiter = limiter

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        await self._limiter.acquire()
        return await super().request(*args, **kwargs)


def api_client(configuration: client.Configuration) -> client.ApiClient:
    """A client for `configuration`, rate-limited when the configuration says so."""
    limiter = getattr(configuration, "rate_limiter", None)
    if isinstance(configuration, KubeConfiguration) and limiter is not None:
        return _LimitedApiClient(configuration, limiter)
    return client.ApiClient(configuration)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """`--context`, `--kube-api-qps` and `--kube-api-burst`, as every program that talks to the
    API takes them (beside its own `--kubeconfig`)."""
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context to use")
    parser.add_argument(
        "--kube-api-qps",
        type=_positive_float,
        default=DEFAULT_QPS,
        metavar="QPS",
        help=f"requests a second to the API server, after the burst (default {DEFAULT_QPS:g})",
    )
    parser.add_argument(
        "--kube-api-burst",
        type=_positive_int,
        default=DEFAULT_BURST,
        metavar="N",
        help=f"requests allowed at once before --kube-api-qps applies (default {DEFAULT_BURST})",
    )


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
    qps: float | None = None,
    burst: int | None = None,
) -> client.Configuration:
    """The client configuration from `kubeconfig`, or in-cluster when it is None; with `qps`,
    clients made by `api_client` share a token bucket of `burst` (default `DEFAULT_BURST`)."""
    configuration = KubeConfiguration()
    if qps is not None:
        configuration.rate_limiter = RateLimiter(qps, burst or DEFAULT_BURST)
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
    if context is not None:
        raise KubeConfigError("--context: needs a kubeconfig (a pod has one API server)")
    try:
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration,
            token_filename=str(service_account / "token"),
            cert_filename=str(service_account / "ca.crt"),
        )
    except ConfigException as exc:
        raise KubeConfigError(f"in-cluster configuration: {exc}") from None
    return configuration


async def load_from_args(args: argparse.Namespace) -> client.Configuration:
    """`load_configuration` from `--kubeconfig` and the flags `add_api_arguments` defined."""
    return await load_configuration(
        args.kubeconfig,
        context=args.context,
        qps=args.kube_api_qps,
        burst=args.kube_api_burst,
    )


def describe(configuration: client.Configuration) -> str:
    """The API server address, for logs and `/readyz`."""
    return str(configuration.host)
