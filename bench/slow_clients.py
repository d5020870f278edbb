"""Slow-upload attack on a running server: slow clients that never finish their bodies, and normal clients.

Each slow client sends a complete header block with `Content-Length: 1000`, then one byte of body every
`byte_interval` seconds; when the server drops it (or answers), it connects again at once. Meanwhile each
normal client posts a small /predict body on a fresh connection, one request at a time, and counts an answer
only when it is a 200 within `timeout` seconds. Used by `bench/bench_serve.py` (figures) and by
tests/app/test_gunicorn_conf.py (the same case, bounded to a few seconds).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

SLOW_HEAD = (b"POST /predict HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
             b"Content-Length: 1000\r\n\r\n")


@dataclass(frozen=True)
class AttackResult:
    """What the normal clients saw while the slow clients were connected."""

    slow_clients: int
    sent: int
    answered: int
    latencies_ms: list[float]

    @property
    def answered_share(self) -> float:
        """Share of the normal requests answered 200 within the client timeout."""
        return self.answered / self.sent if self.sent else 0.0

    def percentile_ms(self, percent: int) -> float:
        """Latency percentile of the answered normal requests, in milliseconds (nan when none)."""
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[percent - 1]


async def _slow_client(port: int, stop: asyncio.Event, byte_interval: float, connected: asyncio.Semaphore) -> None:
    first = True
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(byte_interval)
            continue
        try:
            writer.write(SLOW_HEAD)
            await writer.drain()
            if first:
                connected.release()
                first = False
            for _ in range(1000):
                if stop.is_set() or reader.at_eof():
                    break
                writer.write(b" ")
                await writer.drain()
                try:  # wait one interval, or less if the server answers or closes meanwhile
                    if await asyncio.wait_for(reader.read(65536), byte_interval) == b"":
                        break
                except TimeoutError:
                    pass
        except OSError:
            pass
        finally:
            writer.close()


async def _normal_client(port: int, body: bytes, stop: asyncio.Event, timeout: float,
                         outcomes: list[float | None]) -> None:
    request = (b"POST /predict HTTP/1.1\r\nHost: normal\r\nContent-Type: application/json\r\n"
               b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    while not stop.is_set():
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    writer.write(request)
                    answer = await reader.read()
                finally:
                    writer.close()
            ok = answer.startswith(b"HTTP/1.1 200")
            outcomes.append((time.perf_counter() - started) * 1000 if ok else None)
        except (TimeoutError, OSError):
            outcomes.append(None)


async def _attack(port: int, body: bytes, slow_clients: int, normal_clients: int, seconds: float,
                  byte_interval: float, timeout: float) -> AttackResult:
    stop = asyncio.Event()
    connected = asyncio.Semaphore(0)
    slow = [asyncio.create_task(_slow_client(port, stop, byte_interval, connected)) for _ in range(slow_clients)]
    for _ in range(slow_clients):  # every slow client holds a connection before the normal ones start
        await connected.acquire()
    outcomes: list[float | None] = []
    normal = [asyncio.create_task(_normal_client(port, body, stop, timeout, outcomes))
              for _ in range(normal_clients)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*normal)
    await asyncio.gather(*slow)
    answered = [ms for ms in outcomes if ms is not None]
    return AttackResult(slow_clients, len(outcomes), len(answered), answered)


def slow_upload_attack(port: int, body: bytes, slow_clients: int, *, normal_clients: int = 4,
                       seconds: float = 3.0, byte_interval: float = 0.2, timeout: float = 1.0) -> AttackResult:
    """Run `slow_clients` slow uploads against 127.0.0.1:`port` for `seconds`; return what normal clients saw."""
    # A thread of its own: the caller's thread may already run an event loop (Playwright's sync API does).
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _attack(port, body, slow_clients, normal_clients, seconds, byte_interval,
                                                timeout)).result()
