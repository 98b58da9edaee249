"""An operator's drain while a NOC's worth of `?wait=` long-polls hang on one web process.

    .venv/bin/python bench/operation_wait_bench.py --waiters 1000 --drains 300

One uvicorn process (the real ASGI app; SQLite and a private Redis in a temp dir). First the
anchor: N drains posted one after another with nobody waiting. Then `--waiters` clients (asyncio
connections, all on loopback) each send `GET /api/v1/operations/<id>/?wait=60` for a drain that
runs for an hour, and while they all wait the same N drains are posted again. Reported: each
drain's answer time (p50/p99) both ways and their ratio, and the web process's threads before and
while they wait. Nothing is asserted; every process stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from probe_bench import setup_django  # noqa: E402  (bench/ is on sys.path when a bench runs as a script)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def server_pid(wrapper: int) -> int:
    """uvicorn's pid: the web runs under coreutils `timeout` (it stops by itself)."""
    children = Path(f"/proc/{wrapper}/task/{wrapper}/children").read_text().split()
    return int(children[0]) if children else wrapper


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def until_quiet(pid: int, timeout: float = 120.0) -> float:
    """Wait until the server spends under 5% of a core (every waiter answered once and parked);
    returns the seconds it took."""
    started = time.monotonic()
    before = cpu_seconds(pid)
    while time.monotonic() - started < timeout:
        await asyncio.sleep(1.0)
        now = cpu_seconds(pid)
        if now - before < 0.05:
            break
        before = now
    return time.monotonic() - started


def drain(port: int, token: str, backend_id: int) -> float:
    """One drain through the API; the milliseconds until its answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = json.dumps({"reason": "bench", "grace_seconds": 3600})
    started = time.perf_counter()
    conn.request("POST", f"/api/v1/backends/{backend_id}/drain/", body=body,
                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    answer = conn.getresponse()
    answer.read()
    elapsed = (time.perf_counter() - started) * 1000
    conn.close()
    if answer.status != 202:
        raise RuntimeError(f"drain of {backend_id}: {answer.status}")
    return elapsed


async def hold_waiters(port: int, token: str, operation_id: int, count: int, parked: asyncio.Event,
                       release: asyncio.Event) -> int:
    """`count` connections each waiting on the operation; returns how many got in."""
    request = (f"GET /api/v1/operations/{operation_id}/?wait=60 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode()
    writers: list[asyncio.StreamWriter] = []
    for _ in range(count):
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            break
        writer.write(request)
        writers.append(writer)
        if len(writers) % 100 == 0:
            await asyncio.sleep(0.05)  # let the server take them in
    parked.set()
    await release.wait()
    for writer in writers:
        writer.close()
    return len(writers)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--waiters", type=int, default=1000)
    ap.add_argument("--drains", type=int, default=300)
    ap.add_argument("--port", type=int, default=18950)
    ap.add_argument("--database-url", default="", help="an empty PostgreSQL database to use instead of SQLite")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="steering-wait-bench-"))
    from config.embedded import PrivateRedis

    redis = PrivateRedis().start()
    web: subprocess.Popen[bytes] | None = None
    try:
        setup_django(tmp, redis.url, database_url=args.database_url or None)
        from django.contrib.auth.models import Group, User

        from steering.models import Backend, Pool, PoP, Region, Service
        from steering.services.actions import do_drain
        from steering.services.context import Actor
        from steering.services.tokens import do_create_token

        region = Region.objects.create(slug="bench", name="Bench", latitude=0, longitude=0)
        pop = PoP.objects.create(region=region, slug="bench", name="Bench", city="Loopback", latitude=0, longitude=0)
        service = Service.objects.create(slug="bench", fqdn="bench.example.net")
        pool = Pool.objects.create(pop=pop, service=service, slug="web")
        count = 2 * args.drains + 2
        Backend.objects.bulk_create([Backend(pool=pool, name=f"b{i}", address=f"127.30.0.{i % 250 + 1}",
                                             port=8000 + i, capacity_rps=1000) for i in range(count)])
        backends = list(Backend.objects.order_by("pk").values_list("pk", flat=True))
        user = User.objects.create_user("olga", password="olga-pass-123")
        user.groups.add(Group.objects.get_or_create(name="operator")[0])
        token = do_create_token(user, name="bench", role="operator", actor=Actor.system("bench"))[1]
        op, _ = do_drain(Backend.objects.get(pk=backends[-1]), actor=Actor.system("bench"), reason="held",
                         grace_seconds=3600)
        assert op is not None
        env = {**os.environ, "STEERING_VAR_DIR": str(tmp), "REDIS_URL": redis.url, "LOG_LEVEL": "WARNING",
               "STEERING_LOCAL_SECRET_KEY": "1", "STEERING_DATAPLANE_CONFIRM": "0",
               "STEERING_THROTTLE_READ": "off", "STEERING_THROTTLE_WRITE": "off"}
        if not args.database_url:
            env.pop("DATABASE_URL", None)
        log = open(tmp / "uvicorn.log", "wb")  # noqa: SIM115  (the child holds it)
        web = subprocess.Popen(["timeout", "600", sys.executable, "-m", "uvicorn", "config.asgi:application",
                                "--host", "127.0.0.1", "--port", str(args.port), "--lifespan", "off",
                                "--no-access-log", "--backlog", "4096"],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{args.port}/healthz", timeout=1)  # noqa: S310
                break
            except OSError:
                time.sleep(0.1)
        uvicorn = server_pid(web.pid)
        drain(args.port, token, backends[0])  # warm: the first request loads what every later one uses
        alone = [drain(args.port, token, b) for b in backends[1:args.drains + 1]]
        threads_before = threads_of(uvicorn)

        async def with_waiters() -> tuple[list[float], int, int]:
            parked, release = asyncio.Event(), asyncio.Event()
            holder = asyncio.create_task(hold_waiters(args.port, token, op.pk, args.waiters, parked, release))
            await parked.wait()
            settle = await until_quiet(uvicorn)  # each waiter answered once by Django, then parked
            threads = threads_of(uvicorn)
            loop = asyncio.get_running_loop()
            timed = []
            for b in backends[args.drains + 1:2 * args.drains + 1]:
                timed.append(await loop.run_in_executor(None, drain, args.port, token, b))
            release.set()
            return timed, threads, await holder, settle

        waiting, threads_waiting, held, settled = asyncio.run(with_waiters())
        summary: dict[str, Any] = {
            "waiters": held, "drains": args.drains,
            "drain_ms_alone": {"p50": round(statistics.median(alone), 1), "p99": round(percentile(alone, 0.99), 1)},
            "drain_ms_with_waiters": {"p50": round(statistics.median(waiting), 1),
                                      "p99": round(percentile(waiting, 0.99), 1)},
            "p99_ratio_to_alone": round(percentile(waiting, 0.99) / percentile(alone, 0.99), 2),
            "web_threads": {"before": threads_before, "while_waiting": threads_waiting},
            "seconds_until_every_waiter_parked": round(settled, 1),
            "goal": "a drain answers in under 100 ms while 1,000 wait",
            "met": percentile(waiting, 0.99) < 100,
            "load_average": os.getloadavg()[0],
        }
        print(json.dumps(summary, indent=2))
    finally:
        if web is not None and web.poll() is None:
            os.killpg(web.pid, 15)
            web.wait(10)
        redis.stop()


if __name__ == "__main__":
    main()
