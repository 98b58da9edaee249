"""One shard: probe up to a few hundred backends concurrently, each at its due time.

The event loop does network I/O only. Results are handed, in small batches, to `sink` (a
plain function) on ONE helper thread: that is where Redis counters move and where transitions
go to the database through the service layer. The loop never blocks on either, and a DB
commit of one transition never delays the next probe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Sequence

from steering.health.checks import Network, build_request, probe
from steering.health.fastcheck import start_check
from steering.health.target import ProbeResult, ProbeTarget

Sink = Callable[[list[ProbeResult]], None]
FLUSH_SECONDS = 0.02   # batch window: bounds how long a transition waits before its commit starts
FLUSH_MAX = 256


async def run_shard(
    items: Sequence[tuple[ProbeTarget, float]],
    networks: Sequence[Network],
    sink: Sink,
    *,
    executor: concurrent.futures.Executor | None = None,
) -> int:
    """Probe every (target, due) once, starting each at its due time; returns how many ran.

    `sink` runs on `executor` (one thread) when given, else inline on the loop (tests).
    """
    loop = asyncio.get_running_loop()
    pending: list[ProbeResult] = []
    flushes: list[asyncio.Future[None]] = []
    timer: asyncio.TimerHandle | None = None

    def flush() -> None:
        nonlocal timer
        timer = None
        if not pending:
            return
        batch = pending[:]
        pending.clear()
        if executor is None:
            sink(batch)
        else:
            flushes.append(loop.run_in_executor(executor, sink, batch))

    def collect(result: ProbeResult) -> None:
        nonlocal timer
        pending.append(result)
        if len(pending) >= FLUSH_MAX:
            flush()
        elif timer is None:
            timer = loop.call_later(FLUSH_SECONDS, flush)

    nets = tuple(networks)
    remaining = len(items)
    all_done: asyncio.Future[None] = loop.create_future()
    slow: set[asyncio.Task[None]] = set()

    def done(result: ProbeResult) -> None:
        nonlocal remaining
        collect(result)
        remaining -= 1
        if remaining == 0 and not all_done.done():
            all_done.set_result(None)

    async def general(target: ProbeTarget, due: float) -> None:
        done(await probe(target, nets, due=due))

    def launch(target: ProbeTarget, due: float) -> None:
        # The fast path needs no task; TLS and names get one coroutine each.
        if not start_check(loop, target, nets, due, done, build_request(target)):
            task = loop.create_task(general(target, due))
            slow.add(task)
            task.add_done_callback(slow.discard)

    now_wall, now_loop = time.time(), loop.time()
    for target, due in items:
        delay = due - now_wall
        if delay > 0:
            loop.call_at(now_loop + delay, launch, target, due)
        else:
            launch(target, due)
    if items:
        await all_done
    if timer is not None:
        timer.cancel()
    flush()
    if flushes:
        await asyncio.gather(*flushes)
    return len(items)


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it is, with uvicorn[standard]): about half the CPU per probe."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_shard_blocking(items: Sequence[tuple[ProbeTarget, float]], networks: Sequence[Network], sink: Sink,
                       *, on_thread_exit: Callable[[], None] | None = None) -> int:
    """Run a shard to completion from synchronous code (a Celery task)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe-sink") as executor:
        try:
            with asyncio.Runner(loop_factory=new_loop) as runner:
                return runner.run(run_shard(items, networks, sink, executor=executor))
        finally:
            if on_thread_exit is not None:
                executor.submit(on_thread_exit).result()
