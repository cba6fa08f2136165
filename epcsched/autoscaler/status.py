"""The autoscaler's memory, in a ConfigMap a person can read: `epcsched-autoscaler-status`.

The loop's state (in-flight scale-ups, unneeded-since times, backoffs) must survive a restart and
a change of leader, and an operator wants to see it without our tools: so it is stored as
readable YAML under the data key `status` of one ConfigMap (`kubectl get cm
epcsched-autoscaler-status -o yaml`), as cluster-autoscaler keeps `cluster-autoscaler-status`.
`StatusStore` only moves a dict in and out; what the dict holds is the loop's business.

Writes replace the ConfigMap with the resourceVersion just read, so two writers cannot silently
overwrite each other: a 409 means someone wrote in between, and the write is tried once more on
the fresh version. Other data keys, labels and annotations on the ConfigMap are kept.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import yaml
from kubernetes_asyncio import client

from epcsched.autoscaler.kubeapi import KubeApiError, Obj, request

log = logging.getLogger("epcsched.autoscaler.status")

STATUS_KEY = "status"
#: kube-apiserver refuses a ConfigMap whose data exceeds 1 MiB.
MAX_BYTES = 1024 * 1024


class StatusError(Exception):
    """Reading or writing the status ConfigMap failed; the message says which and why."""


class StatusStore:
    """Loads and saves the autoscaler's status dict in ConfigMap `namespace/name`.

    `api` is an open kubernetes-asyncio ApiClient (the caller owns and closes it).
    """

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str = "epcsched-autoscaler-status",
        *,
        request_timeout: float = 10.0,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.name = name
        self.request_timeout = request_timeout

    @property
    def where(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    async def load(self) -> dict[str, Any] | None:
        """The saved status; None when there is none yet or it cannot be read as a YAML
        mapping (logged: the loop then starts fresh rather than not at all). Raises StatusError
        when the API fails."""
        current = await self._read()
        if current is None:
            log.info("%s does not exist yet: no saved status", self.where)
            return None
        text = (current.get("data") or {}).get(STATUS_KEY)
        if text is None:
            log.warning("%s has no %r key: no saved status", self.where, STATUS_KEY)
            return None
        try:
            status = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            log.warning("%s: %r is not valid YAML, ignoring it: %s", self.where, STATUS_KEY, exc)
            return None
        if not isinstance(status, dict):
            log.warning(
                "%s: %r holds a %s, not a mapping; ignoring it",
                self.where,
                STATUS_KEY,
                type(status).__name__,
            )
            return None
        return status

    async def save(self, status: dict[str, Any]) -> None:
        """Write `status` (YAML, keys in the order given), creating the ConfigMap if missing.
        An unchanged status writes nothing. Raises StatusError."""
        try:
            text = yaml.safe_dump(status, sort_keys=False, default_flow_style=False)
        except yaml.YAMLError as exc:
            raise StatusError(f"{self.where}: the status cannot be written as YAML: {exc}") from exc
        if len(text.encode()) > MAX_BYTES:
            raise StatusError(
                f"{self.where}: the status is {len(text.encode())} bytes; a ConfigMap holds "
                f"at most {MAX_BYTES}"
            )
        for attempt in (1, 2):
            current = await self._read()
            try:
                if current is None:
                    await self._create(text)
                else:
                    if (current.get("data") or {}).get(STATUS_KEY) == text:
                        log.debug("%s: status unchanged, not written", self.where)
                        return
                    await self._replace(current, text)
                return
            except KubeApiError as exc:
                # 409: written (or created) by someone else since we read it; once more on
                # the fresh version.
                if exc.status == 409 and attempt == 1:
                    log.info("%s changed while saving (409); retrying once", self.where)
                    continue
                raise StatusError(f"{self.where}: saving the status failed: {exc}") from exc

    async def _read(self) -> Obj | None:
        try:
            return await request(
                self.core.read_namespaced_config_map(
                    self.name,
                    self.namespace,
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                )
            )
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise StatusError(f"{self.where}: reading the status failed: {exc}") from exc

    async def _create(self, text: str) -> None:
        body: Obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/name": "epcsched-autoscaler"},
            },
            "data": {STATUS_KEY: text},
        }
        await request(
            self.core.create_namespaced_config_map(
                self.namespace,
                cast(Any, body),
                _preload_content=False,
                _request_timeout=self.request_timeout,
            )
        )
        log.info("%s created", self.where)

    async def _replace(self, current: Obj, text: str) -> None:
        body = dict(current)
        body["data"] = {**(current.get("data") or {}), STATUS_KEY: text}
        # `current` carries the resourceVersion read: the replace is refused (409) if the
        # ConfigMap changed since.
        await request(
            self.core.replace_namespaced_config_map(
                self.name,
                self.namespace,
                cast(Any, body),
                _preload_content=False,
                _request_timeout=self.request_timeout,
            )
        )
        log.debug("%s saved (was version %s)", self.where, current["metadata"]["resourceVersion"])


__all__ = ["STATUS_KEY", "StatusError", "StatusStore"]
