"""One shard: probe up to a few hundred backends concurrently, each at its due time.

The event loop does network I/O only. Results are handed, in small batches, to `sink` (a
plain function) on ONE helper thread: that is where Redis counters move and where transitions
go to the database through the service layer. The loop never blocks on either, and a DB
commit of one transition never delays the next probe.

A bad target (a monitor or backend that cannot be probed: its request cannot be built, a check
raises) fails its own probe, with the exception as evidence, and never stops the shard: every
target always gets exactly one result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from collections.abc import Callable, Sequence

from steering.health.checks import Network, build_request, failed, probe
from steering.health.fastcheck import RawCheck, expire_checks, start_check
from steering.health.target import ProbeResult, ProbeTarget

Sink = Callable[[list[ProbeResult]], None]
FLUSH_SECONDS = 0.02   # batch window: bounds how long a transition waits before its commit starts
FLUSH_MAX = 256
# Probes due within the same few milliseconds start from one timer (never early, at most this
# late): one loop wake-up for the group instead of one per probe.
LAUNCH_SLOT = 0.005


# The request bytes per target, found by identity (store.load_targets hands out the same
# ProbeTarget object for an unchanged config); the entry keeps the target, so its id is not reused.
_requests: dict[int, tuple[ProbeTarget, bytes]] = {}


def _request(target: ProbeTarget) -> bytes:
    entry = _requests.get(id(target))
    if entry is None or entry[0] is not target:
        if len(_requests) >= 200_000:
            _requests.clear()
        entry = _requests[id(target)] = (target, build_request(target))
    return entry[1]


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
        done(await probe(target, nets, due=due))  # probe() turns any exception into a failed result

    def launch_group(group: list[tuple[ProbeTarget, float]]) -> None:
        # The fast path needs no task, and the checks started here share one timeout timer per
        # timeout value; TLS and names get one coroutine each.
        expiring: dict[float, list[RawCheck]] = {}
        for target, due in group:
            try:
                check = start_check(loop, target, nets, due, done, _request(target), own_timer=False)
            except Exception as exc:
                # Raised before the check reported anything (a started RawCheck reports its own
                # errors): this target's failure, and the rest of the group still starts.
                done(failed(target, due, exc))
                continue
            if check is None:
                task = loop.create_task(general(target, due))
                slow.add(task)
                task.add_done_callback(slow.discard)
            elif not check.finished:
                expiring.setdefault(target.timeout, []).append(check)
        for timeout, checks in expiring.items():
            loop.call_later(timeout, expire_checks, checks)

    now_wall, now_loop = time.time(), loop.time()
    slots: dict[int, list[tuple[ProbeTarget, float]]] = {}
    for target, due in items:
        delay = due - now_wall
        slots.setdefault(math.ceil(delay / LAUNCH_SLOT) if delay > 0 else 0, []).append((target, due))
    for slot, group in slots.items():
        if slot == 0:
            launch_group(group)
        else:
            loop.call_at(now_loop + slot * LAUNCH_SLOT, launch_group, group)
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
