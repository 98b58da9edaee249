"""The agent contract at fleet size: one web process, N agents long-polling their PoP's desired state.

    .venv/bin/python bench/agents_bench.py --agents 200 --backends-per-pop 100 --rounds 20

One uvicorn process (the real ASGI app, SQLite + a private Redis in a temp dir) serves N agents,
one per PoP, each a thread holding a long-poll (`?after=V&wait=30`, If-None-Match: its etag),
re-asking as soon as it is answered, as steering.agents.contract.Follower does. The bench
process makes changes through the service layer and, per change, times commit → each agent's
answer (200 with the new spec, or 304 "unchanged as of version V"). Two kinds of change:

- one PoP: a backend's port in one PoP changes (its agent gets the new spec; the others are told
  nothing changed for them, without a rebuild of their desired state);
- every PoP, a DNS field: a service's TTL. Only the DNS layer reads it, so every HAProxy agent is
  told "unchanged as of version V" without a rebuild;
- every PoP, its HAProxy spec: a service's protocol, which is in every PoP's spec: all 200 are
  rebuilt (in one batch) and every agent gets its new spec.

Also reported: the desired-state payload of one PoP (bytes, and gzipped), and the web process's
threads while every agent waits. Prints a JSON summary; figures in bench/README.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
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


def make_fleet(pops: int, per_pop: int) -> list[tuple[int, str]]:
    from steering.models import Backend, Pool, PoP, Region, Service

    region = Region.objects.create(slug="bench", name="Bench", latitude=0, longitude=0)
    service = Service.objects.create(slug="bench", fqdn="bench.example.net")
    sites = PoP.objects.bulk_create([PoP(region=region, slug=f"p{i:03d}", name=f"PoP {i}", city="Loopback",
                                         latitude=0, longitude=0) for i in range(pops)])
    sites = list(PoP.objects.order_by("pk"))
    pools = Pool.objects.bulk_create([Pool(pop=p, service=service, slug="web") for p in sites])
    pools = list(Pool.objects.order_by("pk"))
    Backend.objects.bulk_create([Backend(pool=pool, name=f"b{j}", address=f"127.20.{k % 250}.{j % 250 + 1}",
                                         port=8080, capacity_rps=100)
                                 for k, pool in enumerate(pools) for j in range(per_pop)], batch_size=2000)
    return [(p.pk, p.slug) for p in sites]


class Agent:
    """One agent's long-poll loop (the Follower's, minus applying) on a kept-alive connection,
    as a coroutine: 200 of them share one thread, so the client costs the measurement little."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.version = 0
        self.etag: str | None = None
        self.arrivals: dict[int, tuple[float, int]] = {}   # version -> (time, status)
        self.waiting = threading.Event()
        self.errors = 0

    async def ask(self, reader: Any, writer: Any, after: int | None) -> tuple[int, int, str | None]:
        query = "layer=local" + (f"&after={after}&wait=30" if after is not None else "")
        lines = [f"GET /api/v1/agent/desired/?{query} HTTP/1.1", f"Host: 127.0.0.1:{self.port}",
                 f"Authorization: Bearer {self.token}"] + ([f"If-None-Match: {self.etag}"] if self.etag else [])
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if status == 200:
            doc = json.loads(body)
            return 200, int(doc["version"]), doc["etag"]
        if status == 304:
            return 304, int(headers["x-steering-version"]), self.etag
        raise RuntimeError(f"HTTP {status}: {body[:200]!r}")

    async def run(self, stop: threading.Event) -> None:
        import asyncio

        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        _status, self.version, self.etag = await self.ask(reader, writer, None)
        while not stop.is_set():
            self.waiting.set()
            try:
                status, version, etag = await self.ask(reader, writer, self.version)
            except Exception:
                self.errors += 1
                writer.close()
                await asyncio.sleep(0.2)
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                continue
            now = time.time()
            self.waiting.clear()  # answered: not waiting until it has asked again
            if version > self.version:
                self.arrivals[version] = (now, status)
                self.version, self.etag = version, etag


def run_agents(agents: list[Agent], stop: threading.Event) -> threading.Thread:
    import asyncio

    async def all_of_them() -> None:
        await asyncio.gather(*(a.run(stop) for a in agents), return_exceptions=True)

    thread = threading.Thread(target=asyncio.run, args=(all_of_them(),), daemon=True)
    thread.start()
    return thread


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=200, help="agents, one per PoP")
    ap.add_argument("--backends-per-pop", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=20, help="changes of each kind")
    ap.add_argument("--port", type=int, default=18900)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="steering-agents-bench-"))
    from config.embedded import PrivateRedis

    redis = PrivateRedis().start()
    web: subprocess.Popen[bytes] | None = None
    stop = threading.Event()
    try:
        setup_django(tmp, redis.url)
        from django.contrib.auth.models import User

        from steering.choices import Role
        from steering.models import Backend, PoP, Service
        from steering.readmodels.version import current_version
        from steering.services.context import Actor
        from steering.services.tokens import do_create_token
        from steering.services.topology import do_update

        actor = Actor.system("bench")
        sites = make_fleet(args.agents, args.backends_per_pop)
        owner = User.objects.create_superuser("bench", password="bench-pass-123")
        tokens = [do_create_token(owner, name=f"agent-{slug}", role=Role.AGENT, pop=PoP.objects.get(pk=pk),
                                  actor=actor)[1] for pk, slug in sites]
        log = open(tmp / "uvicorn.log", "wb")  # noqa: SIM115
        env = {**os.environ, "STEERING_VAR_DIR": str(tmp), "REDIS_URL": redis.url, "LOG_LEVEL": "WARNING",
               "STEERING_LOCAL_SECRET_KEY": "1"}
        env.pop("DATABASE_URL", None)
        web = subprocess.Popen([sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                                "--port", str(args.port), "--lifespan", "off", "--no-access-log"],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{args.port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)  # noqa: S310
                break
            except OSError:
                time.sleep(0.1)
        # The payload an agent of one PoP receives.
        request = urllib.request.Request(f"{base}/api/v1/agent/desired/?layer=local",
                                         headers={"Authorization": f"Bearer {tokens[0]}"})
        body = urllib.request.urlopen(request, timeout=30).read()  # noqa: S310
        agents = [Agent(args.port, t) for t in tokens]
        run_agents(agents, stop)
        for a in agents:
            a.waiting.wait(60)
        time.sleep(2.0)
        threads_waiting = len(os.listdir(f"/proc/{web.pid}/task"))

        def one_change(change: Any) -> list[tuple[float, int]]:
            change()
            committed = time.time()
            version = current_version()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(version not in a.arrivals for a in agents):
                time.sleep(0.05)  # arrival times are stamped by the agents, not by this loop
            out = [((a.arrivals[version][0] - committed) * 1000, a.arrivals[version][1])
                   for a in agents if version in a.arrivals]
            # Every agent asks again, and the server has taken each request in (its token checked,
            # its wait begun) before the next change: the measurement is "all 200 waiting".
            for a in agents:
                a.waiting.wait(30)
            time.sleep(1.0)
            return out

        results: dict[str, list[tuple[float, int]]] = {"one_pop": [], "every_pop_dns_field": [],
                                                       "every_pop_haproxy_spec": []}
        # Each change's slowest answer: a tail from one slow round (a pause) and a tail in every
        # round look alike in a p99 over all answers.
        slowest: dict[str, list[float]] = {kind: [] for kind in results}

        def record(kind: str, answers: list[tuple[float, int]]) -> None:
            results[kind] += answers
            slowest[kind].append(round(max((ms for ms, _ in answers), default=float("nan")), 1))
        for i in range(args.rounds):
            pk, _slug = sites[i % len(sites)]
            b = Backend.objects.filter(pool__pop_id=pk).order_by("pk").first()
            assert b is not None
            record("one_pop", one_change(lambda b=b, i=i: do_update(b, {"port": 8081 + i}, actor=actor,
                                                                   reason="bench")))
        service = Service.objects.get()
        for i in range(args.rounds):
            record("every_pop_dns_field", one_change(lambda i=i: do_update(service, {"ttl": 31 + i}, actor=actor,
                                                                          reason="bench")))
        for i in range(args.rounds):
            protocol = ("tcp", "http")[i % 2]
            record("every_pop_haproxy_spec", one_change(lambda p=protocol: do_update(
                Service.objects.get(), {"protocol": p}, actor=actor, reason="bench")))
        summary: dict[str, Any] = {
            "agents": args.agents, "backends_per_pop": args.backends_per_pop, "rounds": args.rounds,
            "payload_bytes_per_pop": len(body), "payload_gzip_bytes_per_pop": len(gzip.compress(body)),
            "web_threads_while_all_wait": threads_waiting, "agent_errors": sum(a.errors for a in agents),
        }
        for kind, samples in results.items():
            ms = [m for m, _ in samples]
            summary[kind] = {
                "answers": len(ms), "expected": args.rounds * args.agents,
                "new_spec_200": sum(1 for _, s in samples if s == 200),
                "unchanged_304": sum(1 for _, s in samples if s == 304),
                "p50_ms": round(percentile(ms, 0.50), 1), "p99_ms": round(percentile(ms, 0.99), 1),
                "max_ms": round(max(ms), 1) if ms else None, "mean_ms": round(statistics.mean(ms), 1) if ms else None,
                "goal_p99_ms": 250, "met": bool(ms) and percentile(ms, 0.99) <= 250,
                "slowest_per_change_ms": slowest[kind],
            }
        print(json.dumps(summary, indent=2))
    finally:
        stop.set()
        if web is not None and web.poll() is None:
            web.terminate()
            try:
                web.wait(10)
            except subprocess.TimeoutExpired:
                web.kill()
        redis.stop()


if __name__ == "__main__":
    main()
