"""Hypothesis profiles shared by every test file, so a property test's strength is repeatable.

- `ci` (loaded when `CI` is set, as `.ci/run` runs, and by `make mutation`): derandomized, so a
  run is a function of the code alone and a mutant the properties catch once they catch on every
  run; no example database, so an example saved by an earlier run cannot decide a later one.
- `seeded`: random generation from `--hypothesis-seed=N`, no database. `make mutation
  SEEDS=10` uses it to measure that the planner and bound properties catch their mutants under
  many seeds, not only under the one `ci` fixes.
- Otherwise hypothesis's default (random, with the local `.hypothesis/` database), which keeps
  looking for new failures on a developer's machine.

`EPCSCHED_HYPOTHESIS_PROFILE` picks a profile by name. Per-test `@settings` set only the number
of examples (and `deadline=None`), never the randomness, so the profile decides it.

Every test also starts with the parsed-requests cache of `epcsched.objects` empty: mutmut forks
its workers after a clean run, and a pod found in an inherited cache would never reach the
(mutated) code that parses requests, so a mutant there could survive unseen.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import settings
from yarl import URL

from epcsched import objects


@pytest.fixture(autouse=True)
def _fresh_request_cache() -> Iterator[None]:
    objects._REQUESTS.clear()
    yield


settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("seeded", derandomize=False, database=None, deadline=None)

_profile = os.environ.get("EPCSCHED_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "")
if _profile:
    settings.load_profile(_profile)


class FastPathServer(TestServer):
    """aiohttp's TestServer, listening through the extender's own site (`fastpath`), as
    `epcsched extender` does: plain verb calls answered by the fast path, the rest by aiohttp."""

    async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
        from epcsched.extender.fastpath import ExtenderSite

        if self.runner:
            return
        self._loop = loop
        self.runner = await self._make_runner(**kwargs)
        await self.runner.setup()
        site = ExtenderSite(self.runner, self.host, 0)
        await site.start()
        self.port = site.port
        self.scheme = "http"
        self._root = URL(f"http://{self.host}:{self.port}")


@pytest.fixture(params=["aiohttp", "fastpath"])
def extender_client(
    request: pytest.FixtureRequest, aiohttp_client: Any
) -> Callable[[web.Application], Awaitable[TestClient[Any, Any]]]:
    """A client of an extender app served both ways: by aiohttp's own site, and by the site
    `epcsched extender` listens with, whose fast path answers the verbs itself."""

    async def make(app: web.Application) -> TestClient[Any, Any]:
        if request.param == "fastpath":
            return cast("TestClient[Any, Any]", await aiohttp_client(FastPathServer(app)))
        return cast("TestClient[Any, Any]", await aiohttp_client(app))

    return make
