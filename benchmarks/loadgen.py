"""A small HTTP/1.1 load generator, run as its own process by the benchmarks.

Keep-alive connections on raw asyncio streams (uvloop when present) so the client costs far less
than the server it measures. Posts the given bodies round-robin for a fixed time and prints one
JSON line: requests, requests/s and latency percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit


async def _worker(
    host: str,
    port: int,
    path: str,
    bodies: list[bytes],
    deadline: float,
    latencies: list[float],
    offset: int,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    heads = [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body in bodies
    ]
    i = offset
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(heads[i % len(heads)])
            i += 1
            status_line = await reader.readline()
            if not status_line.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected response {status_line!r}")
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def run(url: str, bodies: list[bytes], seconds: float, concurrency: int) -> dict[str, float]:
    parts = urlsplit(url)
    latencies: list[float] = []
    # One untimed request per connection so connection set-up is not measured.
    warm = time.perf_counter() + 0.3
    await asyncio.gather(
        *(
            _worker(
                parts.hostname or "127.0.0.1", parts.port or 80, parts.path, bodies, warm, [], c
            )
            for c in range(concurrency)
        )
    )
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _worker(
                parts.hostname or "127.0.0.1",
                parts.port or 80,
                parts.path,
                bodies,
                deadline,
                latencies,
                c,
            )
            for c in range(concurrency)
        )
    )
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 3)

    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("bodies", nargs="+", type=Path)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    bodies = [p.read_bytes() for p in args.bodies]
    try:
        import uvloop

        result = uvloop.run(run(args.url, bodies, args.seconds, args.concurrency))
    except ImportError:
        result = asyncio.run(run(args.url, bodies, args.seconds, args.concurrency))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
