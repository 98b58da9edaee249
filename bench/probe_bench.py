"""Probe engine vs HAProxy's own health checks, side by side in one run, on loopback.

    .venv/bin/python bench/probe_bench.py --backends 2000 --interval 2 --seconds 30

What runs (everything stops by itself; nothing listens outside 127.0.0.0/8):
  - bench/backend_server.py: N HTTP listeners on 127.10.x.y:18080 in one uvloop process,
    counting requests per prober (/ours/... vs /haproxy/...);
  - a private redis-server and a SQLite DB in a temp dir, the fleet written to it
    (pools of 10 backends, one http monitor: GET, interval, timeout 1 s, rise 2, fall 3);
  - HAProxy (one thread) with one backend of the same N servers, `check inter <interval>`;
  - our engine in THIS process: the probe tick every second (claim from Redis) and its shards
    as concurrent coroutines on one uvloop loop, results recorded on a sink thread through
    steering.tasks.probes.ingest_deferred (Redis counters, transitions into the outbox). That is
    the Celery task's code path minus the broker hop (probe_tick -> probe_shard);
  - the recorder in a CHILD process (as the recorder task runs in another worker process):
    steering.tasks.probes.record_queued, transitions into the DB via the service layer. Its CPU
    is counted with ours.
Then detection latency: 20 backends in 20 different pools are killed (listener closed), and the
time from each kill to its down transition being committed and published is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int | str) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS  # utime, stime


def cpu_seconds(pid: int | str) -> float:
    return sum(cpu_split(pid))


def address(i: int) -> str:
    return f"127.10.{i // 250}.{i % 250 + 1}"


class Server:
    def __init__(self, count: int, port: int, max_seconds: float) -> None:
        self.p = subprocess.Popen([sys.executable, str(ROOT / "bench" / "backend_server.py"), "--count", str(count),
                                   "--port", str(port), "--max-seconds", str(max_seconds)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lock = threading.Lock()
        assert "ready" in self.ask(None)

    def ask(self, command: str | None) -> dict:
        with self.lock:
            if command is not None:
                self.p.stdin.write(command + "\n")
                self.p.stdin.flush()
            return json.loads(self.p.stdout.readline())

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                self.p.stdin.write("quit\n")
                self.p.stdin.flush()
                self.p.wait(5)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.p.kill()


def haproxy_config(tmp: Path, count: int, port: int, interval: float) -> Path:
    lines = [
        "global", f"    stats socket {tmp}/haproxy.sock mode 600 level admin", "    nbthread 1", "    maxconn 4000",
        "defaults", "    mode http", "    timeout connect 1s", "    timeout check 1s",
        "    timeout client 5s", "    timeout server 5s",
        "backend bench", "    option httpchk GET /haproxy/healthz", "    http-check expect status 200",
        f"    default-server check inter {int(interval * 1000)}ms rise 2 fall 3",
    ]
    lines += [f"    server b{i} {address(i)}:{port}" for i in range(count)]
    path = tmp / "haproxy.cfg"
    path.write_text("\n".join(lines) + "\n")
    return path


def setup_django(tmp: Path, redis_url: str, *, collectstatic: bool = False, database_url: str | None = None) -> None:
    """A bench's own Django: SQLite in `tmp` (or `database_url`, an empty database the bench may
    fill), the given Redis, migrated (and static files for a UI bench)."""
    os.environ.update({"STEERING_VAR_DIR": str(tmp), "REDIS_URL": redis_url,
                       "DJANGO_SETTINGS_MODULE": "config.settings", "LOG_LEVEL": "WARNING"})
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    else:
        os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if collectstatic:
        call_command("collectstatic", "--noinput", verbosity=0)


def make_fleet(count: int, port: int, interval: float) -> list[int]:
    from steering.models import Backend, Monitor, Pool, PoP, Region, Service

    region = Region.objects.create(slug="bench", name="Bench", latitude=0, longitude=0)
    pop = PoP.objects.create(region=region, slug="bench", name="Bench", city="Loopback", latitude=0, longitude=0)
    service = Service.objects.create(slug="bench", fqdn="bench.example.net")
    mon = Monitor.objects.create(slug="bench", kind="http", path="/ours/healthz", interval_seconds=interval,
                                 timeout_seconds=1.0, rise=2, fall=3)
    pools = [Pool(pop=pop, service=service, slug=f"p{i}", monitor=mon) for i in range((count + 9) // 10)]
    Pool.objects.bulk_create(pools)
    pools = list(Pool.objects.order_by("pk"))
    Backend.objects.bulk_create([Backend(pool=pools[i // 10], name=f"b{i}", address=address(i), port=port)
                                 for i in range(count)])
    return list(Backend.objects.order_by("pk").values_list("pk", flat=True))


async def engine_loop(stop: threading.Event, tick_pool: concurrent.futures.Executor,
                      sink_pool: concurrent.futures.Executor) -> None:
    from steering.health import engine
    from steering.redisconn import sync_client
    from steering.tasks import probes

    r = sync_client()
    nets = probes.networks()
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[int]] = set()
    next_tick = time.time()
    while not stop.is_set():
        shards: list[list[list[float]]] = []
        await loop.run_in_executor(tick_pool, functools.partial(probes.tick, dispatch=shards.append))
        for shard in shards:
            pairs, sink, _ = await loop.run_in_executor(tick_pool, probes.prepare, r, shard)
            task = asyncio.create_task(engine.run_shard(pairs, nets, sink, executor=sink_pool))
            running.add(task)
            task.add_done_callback(running.discard)
        next_tick += probes.TICK_SECONDS
        await asyncio.sleep(max(0.0, next_tick - time.time()))
    await asyncio.gather(*running)


PUBLISHED = "bench:published"
WAKE = "bench:record"
KILLED = "bench:killed"


def recorder_loop(stop: object) -> None:
    """The recorder task's work in a loop (the child process): outbox -> DB, publish times to Redis."""
    import steering.services.effects as effects
    from steering.redisconn import sync_client
    from steering.tasks import probes

    r = sync_client()
    original = effects.publish_after_commit

    from steering.models import Backend

    def recording_publish(version: int, deltas: list[dict]) -> None:
        original(version, deltas)
        now = time.time()
        killed = {int(k) for k in r.hkeys(KILLED)}
        ids = [d["id"] for d in deltas if d["type"] == "backend" and d["id"] in killed]
        # Only the down transition counts (a late warm-up "up" of a killed backend must not).
        for pk in Backend.objects.filter(pk__in=ids, health="down").values_list("pk", flat=True):
            r.hsetnx(PUBLISHED, pk, now)

    effects.publish_after_commit = recording_publish
    while not stop.is_set():  # type: ignore[attr-defined]
        # Woken the way a Celery worker is: a message on a Redis list (here without Celery's envelope).
        if r.brpop([WAKE], timeout=1):
            probes.record_queued(r)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", type=int, default=2000)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--no-haproxy", action="store_true")
    args = ap.parse_args()
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not args.no_haproxy and not os.path.exists(haproxy):
        sys.exit("haproxy not found: apt-get install -y haproxy")
    tmp = Path(tempfile.mkdtemp(prefix="steering-bench-"))
    from config.embedded import PrivateRedis

    redis = PrivateRedis().start()
    server = Server(args.backends, args.port, max_seconds=args.seconds + 300)
    hap: subprocess.Popen[bytes] | None = None
    stop = threading.Event()
    runner: threading.Thread | None = None
    recorder: Any = None
    recorder_stop: Any = None
    try:
        setup_django(tmp, redis.url)
        ids = make_fleet(args.backends, args.port, args.interval)
        import multiprocessing

        from django.db import connections

        from steering.redisconn import sync_client
        from steering.tasks import probes

        rr = sync_client()
        # The recorder task's broker hop, minus Celery: one list push per wave, one blocking pop.
        probes.schedule_recorder = lambda: rr.lpush(WAKE, 1)
        connections.close_all()  # the child must not share this process's DB connection
        recorder_stop = multiprocessing.get_context("fork").Event()
        recorder = multiprocessing.get_context("fork").Process(target=recorder_loop, args=(recorder_stop,), daemon=True)
        recorder.start()

        def published() -> dict[int, float]:
            return {int(k): float(v) for k, v in rr.hgetall(PUBLISHED).items()}
        if not args.no_haproxy:
            hap = subprocess.Popen([haproxy, "-db", "-f", str(haproxy_config(tmp, args.backends, args.port,
                                                                               args.interval))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tick_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tick")
        sink_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sink")
        from steering.health.engine import new_loop

        runner = threading.Thread(target=lambda: asyncio.Runner(loop_factory=new_loop).run(
            engine_loop(stop, tick_pool, sink_pool)), daemon=True)
        runner.start()
        from steering.models import Backend

        warm_deadline = time.time() + 60
        while Backend.objects.filter(health="up").count() < args.backends and time.time() < warm_deadline:
            time.sleep(1)
        time.sleep(args.interval)  # let the warm-up transitions and their resyncs settle
        me = os.getpid()
        split0 = cpu_split(me)
        c0 = {"ours": cpu_seconds(me), "recorder": cpu_seconds(recorder.pid), "redis": cpu_seconds(redis.process.pid),
              "server": cpu_seconds(server.p.pid), **({"haproxy": cpu_seconds(hap.pid)} if hap else {})}
        n0, t0 = server.ask("stats"), time.time()
        time.sleep(args.seconds)
        n1, t1 = server.ask("stats"), time.time()
        split1 = cpu_split(me)
        c1 = {"ours": cpu_seconds(me), "recorder": cpu_seconds(recorder.pid), "redis": cpu_seconds(redis.process.pid),
              "server": cpu_seconds(server.p.pid), **({"haproxy": cpu_seconds(hap.pid)} if hap else {})}
        span = t1 - t0
        report: dict[str, object] = {"backends": args.backends, "interval_s": args.interval, "window_s": round(span, 1)}
        for who in ("ours", "haproxy"):
            if who == "haproxy" and not hap:
                continue
            n = n1[who] - n0[who]
            cpu = c1[who] - c0[who]
            if who == "ours":
                cpu += c1["recorder"] - c0["recorder"]  # the recorder's work is ours too
            report[who] = {"probes": n, "probes_per_s": round(n / span), "cpu_s": round(cpu, 2),
                           "cpu_s_per_1000": round(1000 * cpu / max(n, 1), 3)}
        n_ours = max(n1["ours"] - n0["ours"], 1)
        report["ours"]["cpu_s_per_1000_user_sys"] = [round(1000 * (split1[k] - split0[k]) / n_ours, 3)  # type: ignore[index]
                                                      for k in (0, 1)]
        report["ours"]["prober_process_cpu_s"] = round(c1["ours"] - c0["ours"], 2)  # type: ignore[index]
        report["ours"]["recorder_process_cpu_s"] = round(c1["recorder"] - c0["recorder"], 2)  # type: ignore[index]
        report["redis_cpu_s_per_1000_of_ours"] = round(1000 * (c1["redis"] - c0["redis"]) / n_ours, 3)
        report["server_cpu_s"] = round(c1["server"] - c0["server"], 2)
        if hap:
            ours, theirs = report["ours"], report["haproxy"]
            report["cpu_ratio_ours_over_haproxy"] = round(ours["cpu_s_per_1000"] / max(theirs["cpu_s_per_1000"], 1e-9), 2)
            report["cpu_ratio_incl_redis"] = round((ours["cpu_s_per_1000"] + report["redis_cpu_s_per_1000_of_ours"])
                                                   / max(theirs["cpu_s_per_1000"], 1e-9), 2)
        # Detection latency: kill backends in distinct pools (one per pool: no panic), staggered.
        victims = random.Random(7).sample(range(0, args.backends, 10), args.kills)
        killed: dict[int, float] = {}
        for i in victims:
            rr.hdel(PUBLISHED, ids[i])
            killed[ids[i]] = server.ask(f"kill {i}")["t"]
            rr.hset(KILLED, ids[i], killed[ids[i]])
            time.sleep(random.Random(i).uniform(0.05, 0.3))
        deadline = time.time() + args.interval * 3 + 10
        while time.time() < deadline and not all(bid in published() for bid in killed):
            time.sleep(0.1)
        seen = published()
        lat = [seen[b] - killed[b] for b in killed if b in seen]
        report["detection"] = {
            "kills": len(killed), "detected": len(lat), "goal_p99_s": round(args.interval * 3 + 0.3, 2),
            **({"p50_s": round(statistics.median(lat), 3), "p99_s": round(percentile(lat, 99), 3),
                "max_s": round(max(lat), 3)} if lat else {}),
            "down_in_db": Backend.objects.filter(pk__in=list(killed), health="down").count(),
        }
        print(json.dumps(report, indent=2))
    finally:
        stop.set()
        if runner is not None:
            runner.join(args.interval + 10)  # the last shards finish before Redis goes away
        if recorder is not None:
            recorder_stop.set()
            recorder.join(10)
        if hap and hap.poll() is None:
            hap.terminate()
            hap.wait(5)
        server.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
