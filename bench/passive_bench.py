"""A backend dies under load: failed requests and time to eject, our config vs HAProxy's check + observe.

    .venv/bin/python bench/passive_bench.py --backends 8 --rate 400 --rounds 5

One run, side by side, on loopback (everything stops by itself):
  - N backend processes (HTTP/1.1 keep-alive on 127.0.0.1, one process each so one can be SIGKILLed);
  - HAProxy "ours": the config steering renders for a pool with the default passive-health settings
    (retries 3, option redispatch 1, retry-on conn-failure empty-response response-timeout for
    idempotent methods, observe layer4 error-limit 5 on-error mark-down, check only to come back);
  - HAProxy "anchor": the same servers with HAProxy's own health checking as commonly written:
    `check inter 2s fall 3 rise 2 observe layer4 error-limit 10 on-error mark-down` (error-limit 10
    is HAProxy's default; mark-down is its fastest on-error), HAProxy's default retries (3, same server);
  - one load generator process per HAProxy: the same steady rate of GETs over keep-alive connections;
  - our control plane at production cadence: the stats collector every 1 s (the agent's job: figures
    into Redis, and the effective weights pushed back), the outlier tick every 1 s (the beat task),
    on a private redis-server and a SQLite DB in a temp dir.
Each round SIGKILLs one backend (both HAProxies lose it at the same instant), waits, restarts it and
lets both take it back. Reported per config: failed requests (non-200 or no answer), requests slower
than 1 s, time from the kill to HAProxy marking the server DOWN, and for ours the time to the
ejection being committed (audited, effective weight 0) by the control plane.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import multiprocessing
import os
import shutil
import signal
import socket
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

BACKEND_CODE = r"""
import asyncio, sys
name, port, max_seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
async def handle(reader, writer):
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            body = name.encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)  # one write
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()
async def main():
    await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
    print("ready", flush=True)
    await asyncio.sleep(max_seconds)
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Backend:
    def __init__(self, name: str, port: int, max_seconds: float) -> None:
        self.name, self.port, self.max_seconds = name, port, max_seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        deadline = time.time() + 10
        while True:  # the port may linger a moment after a kill
            self.proc = subprocess.Popen([sys.executable, "-c", BACKEND_CODE, self.name, str(self.port),
                                          str(self.max_seconds)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert self.proc.stdout is not None
            if self.proc.stdout.readline().strip() == b"ready":
                return
            self.proc.wait(5)
            if time.time() > deadline:
                raise RuntimeError(f"backend {self.name} cannot listen on {self.port}")
            time.sleep(0.1)

    def kill(self) -> float:
        assert self.proc is not None
        t = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)
        return t

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def load_process(port: int, rate: float, threads: int, stop: Any, out: Any) -> None:
    """Open-loop-ish steady GETs (each thread paced to rate/threads); records failures and slow answers."""
    results: dict[str, Any] = {"ok": 0, "failed": [], "slow": []}
    lock = threading.Lock()
    period = threads / rate

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        due = time.monotonic()
        while not stop.is_set():
            t0 = time.time()
            try:
                conn.request("GET", "/")
                r = conn.getresponse()
                r.read()
                bad = None if r.status == 200 else str(r.status)
            except (OSError, http.client.HTTPException) as exc:
                bad = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            spent = time.time() - t0
            with lock:
                if bad is None:
                    results["ok"] += 1
                else:
                    results["failed"].append((t0, bad))
                if spent > 1.0:
                    results["slow"].append((t0, round(spent, 3)))
            due += period
            time.sleep(max(0.0, due - time.monotonic()))
            due = max(due, time.monotonic() - period)  # never burst to catch up after a stall

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.send(results)


def anchor_config(sock: str, port: int, backends: list[Backend]) -> str:
    lines = ["global", f"    stats socket {sock} mode 600 level admin", "    maxconn 4096",
             "defaults", "    mode http", "    timeout connect 5s", "    timeout client 60s", "    timeout server 60s",
             "    timeout check 2s",
             "frontend fe", "    mode http", f"    bind 127.0.0.1:{port}", "    option http-keep-alive",
             "    default_backend be",
             "backend be", "    mode http", "    balance roundrobin",
             "    default-server check inter 2s fall 3 rise 2 observe layer4 error-limit 10 on-error mark-down"]
    lines += [f"    server {b.name} 127.0.0.1:{b.port} weight 100" for b in backends]
    return "\n".join(lines) + "\n"


def start_haproxy(binary: str, cfg: Path, text: str, sock: str) -> subprocess.Popen[bytes]:
    cfg.write_text(text)
    check = subprocess.run([binary, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(check.stdout + check.stderr)
    proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from steering.dataplane.haproxy.runtime import Runtime

    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if Runtime(sock).backends():
                return proc
        except Exception:
            time.sleep(0.05)
    raise RuntimeError("haproxy did not start")


def status(sock: str, name: str) -> str:
    from steering.dataplane.haproxy.runtime import Runtime

    return next((s.status for s in Runtime(sock).show_stat() if s.name == name and s.backend != "BACKEND"), "?")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", type=int, default=8)
    ap.add_argument("--rate", type=float, default=400.0, help="requests/s per HAProxy")
    ap.add_argument("--threads", type=int, default=16, help="client connections per HAProxy")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--after", type=float, default=6.0, help="seconds watched after each kill")
    args = ap.parse_args()
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(binary):
        sys.exit("haproxy not found: apt-get install -y haproxy")
    tmp = Path(tempfile.mkdtemp(prefix="steering-passive-bench-"))
    budget = args.rounds * (args.after + 15) + 120
    from probe_bench import setup_django  # bench/ is on sys.path when a bench runs as a script

    from config.embedded import PrivateRedis

    redis = PrivateRedis().start()
    backends: list[Backend] = []
    haps: list[subprocess.Popen[bytes]] = []
    loads: list[tuple[Any, Any]] = []
    stop_load = multiprocessing.get_context("fork").Event()
    stop_cp = threading.Event()
    try:
        setup_django(tmp, redis.url)
        from django.db import connections
        from django.utils import timezone

        from steering.dataplane.haproxy.desired import pop_spec
        from steering.dataplane.haproxy.render import render
        from steering.dataplane.haproxy.runtime import Runtime
        from steering.dataplane.haproxy.stats import StatsCollector
        from steering.models import Backend as BackendRow
        from steering.models import Pool, PoP, Region, Service
        from steering.services import outliers

        backends = [Backend(f"b{i}", free_port(), budget) for i in range(args.backends)]
        region = Region.objects.create(slug="bench", name="Bench", latitude=0, longitude=0)
        pop = PoP.objects.create(region=region, slug="bench", name="Bench", city="Loopback", latitude=0, longitude=0)
        service = Service.objects.create(slug="api", fqdn="api.example.net", protocol="http")
        pool = Pool.objects.create(pop=pop, service=service, slug="web")
        for b in backends:
            BackendRow.objects.create(pool=pool, name=b.name, address="127.0.0.1", port=b.port, health="up",
                                      capacity_rps=1000)
        ours_sock, anchor_sock = str(tmp / "ours.sock"), str(tmp / "anchor.sock")
        ours_port, anchor_port = free_port(), free_port()
        text = render(pop_spec(pop), socket_path=ours_sock, binds={"api": ("127.0.0.1", ours_port)}).text
        haps.append(start_haproxy(binary, tmp / "ours.cfg", text, ours_sock))
        haps.append(start_haproxy(binary, tmp / "anchor.cfg", anchor_config(anchor_sock, anchor_port, backends),
                                  anchor_sock))
        connections.close_all()  # load children must not share the DB connection
        ctx = multiprocessing.get_context("fork")
        for port in (ours_port, anchor_port):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=load_process, args=(port, args.rate, args.threads, stop_load, theirs), daemon=True)
            proc.start()
            loads.append((proc, mine))

        collector = StatsCollector(Runtime(ours_sock))
        proxy = pop_spec(pop).pools[0].proxy

        def agent() -> None:  # the PoP agent's part: figures every second, weights after each change
            pushed: dict[str, int] = {}
            while not stop_cp.wait(1.0):
                spec = pop_spec(pop)
                collector.collect(spec)
                for s in spec.pools[0].servers:
                    if pushed.get(s.name) != s.weight:
                        Runtime(ours_sock).set_weight(proxy, s.name, s.weight)
                        pushed[s.name] = s.weight
            connections.close_all()

        def beat() -> None:  # the outlier task, every second
            time.sleep(0.5)  # out of phase with the agent, as two independent schedules are
            while not stop_cp.wait(1.0):
                outliers.tick()
            connections.close_all()

        cp = [threading.Thread(target=agent, daemon=True), threading.Thread(target=beat, daemon=True)]
        for t in cp:
            t.start()
        time.sleep(3.0)  # warm: connections open, a few samples in each window
        rounds = []
        for r in range(args.rounds):
            victim = backends[r % len(backends)]
            row = BackendRow.objects.get(pool=pool, name=victim.name)
            t_kill = victim.kill()
            down: dict[str, float | None] = {"ours": None, "anchor": None}
            ejected: float | None = None
            while time.time() - t_kill < args.after:
                now = time.time()
                for who, sock in (("ours", ours_sock), ("anchor", anchor_sock)):
                    if down[who] is None and status(sock, victim.name).startswith("DOWN"):
                        down[who] = now - t_kill
                if ejected is None and BackendRow.objects.filter(pk=row.pk, ejected_at__isnull=False).exists():
                    ejected = now - t_kill
                time.sleep(0.005)
            rounds.append({"victim": victim.name, "t_kill": t_kill, "haproxy_down_s": down, "ejected_s": ejected})
            victim.start()
            # Back to the start: the control plane ends the ejection (as its time running out would),
            # both HAProxies' checks take the server back.
            BackendRow.objects.filter(pk=row.pk, ejected_at__isnull=False).update(ejected_until=timezone.now())
            deadline = time.time() + 15
            while time.time() < deadline and not (
                    status(ours_sock, victim.name).startswith("UP") and status(anchor_sock, victim.name).startswith("UP")
                    and not BackendRow.objects.filter(pk=row.pk, ejected_at__isnull=False).exists()):
                time.sleep(0.1)
            time.sleep(2.0)
        stop_load.set()
        results = [conn.recv() for _, conn in loads]
        for proc, _ in loads:
            proc.join(15)
        stop_cp.set()
        for t in cp:
            t.join(10)

        def window(items: list[tuple[float, Any]], t: float) -> int:
            return sum(1 for at, _ in items if t - 0.5 <= at <= t + args.after)

        report: dict[str, Any] = {"backends": args.backends, "rate_per_haproxy": args.rate, "rounds": args.rounds,
                                  "when": datetime.date.today().isoformat()}
        for who, res in zip(("ours", "anchor"), results, strict=True):
            per_round = [window(res["failed"], rd["t_kill"]) for rd in rounds]
            downs = [rd["haproxy_down_s"][who] for rd in rounds if rd["haproxy_down_s"][who] is not None]
            report[who] = {
                "requests": res["ok"] + len(res["failed"]), "failed": len(res["failed"]),
                "failed_per_kill": per_round, "slow_over_1s": len(res["slow"]),
                "failed_kinds": sorted({k for _, k in res["failed"]}),
                "haproxy_down_s": {"median": round(statistics.median(downs), 3), "max": round(max(downs), 3)}
                if downs else None,
                "haproxy_down_detected": f"{len(downs)}/{len(rounds)}",
            }
        ejects = [rd["ejected_s"] for rd in rounds if rd["ejected_s"] is not None]
        report["ours"]["control_plane_ejected_s"] = ({"median": round(statistics.median(ejects), 3),
                                                      "max": round(max(ejects), 3)} if ejects else None)
        report["ours"]["control_plane_ejected"] = f"{len(ejects)}/{len(rounds)}"
        print(json.dumps(report, indent=2))
    finally:
        stop_load.set()
        stop_cp.set()
        for proc, _ in loads:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        for h in haps:
            if h.poll() is None:
                h.terminate()
                h.wait(5)
        for b in backends:
            b.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
