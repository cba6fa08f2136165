"""One way for the autoscaler's Kubernetes building blocks to call the API and see it fail.

The drainer, the event recorder, the status store and the leader elector call kubernetes-asyncio's
generated APIs with `_preload_content=False` and read the JSON themselves: they work on the
objects as the API sends them (a Node's taints, a Status's causes), not on generated models that
drop what they do not know. In that mode kubernetes-asyncio does not raise on an error status,
and a refused connection or a timeout arrives as one of several aiohttp/asyncio exceptions;
`request` turns every failure into a `KubeApiError` carrying the HTTP status (0 when no answer
came) and the Status message, so callers have one exception to catch and one line to log.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, cast

import aiohttp

Obj = dict[str, Any]


class KubeApiError(Exception):
    """A Kubernetes API call that failed: an error status, or no answer at all (status 0)."""

    def __init__(self, status: int, message: str, *, body: Obj | None = None) -> None:
        super().__init__(f"{status} {message}" if status else message)
        self.status = status
        self.message = message
        self.body: Obj = body or {}
        """The `Status` object the server answered with (empty when it sent none)."""

    @property
    def causes(self) -> list[str]:
        """The messages of the Status's `details.causes` (an eviction's budget, for one)."""
        details = self.body.get("details")
        causes = details.get("causes") if isinstance(details, dict) else None
        return [str(c["message"]) for c in causes or () if isinstance(c, dict) and c.get("message")]


async def request(call: Awaitable[object]) -> Obj:
    """Await a `_preload_content=False` call; its JSON body, or `KubeApiError`."""
    try:
        response = cast(aiohttp.ClientResponse, await call)
        async with response:
            raw = await response.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise KubeApiError(
            0, f"no answer from the API server: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if not 200 <= response.status <= 299:
        message = body.get("message") if body.get("kind") == "Status" else None
        if not isinstance(message, str) or not message:
            message = raw[:200].decode("utf-8", "replace") or str(response.reason)
        reason = body.get("reason")
        text = f"{reason}: {message}" if isinstance(reason, str) and reason else message
        raise KubeApiError(response.status, text, body=body)
    return body


__all__ = ["KubeApiError", "Obj", "request"]
