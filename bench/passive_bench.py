"""A backend dies under load: failed requests and time to eject, our config vs HAProxy's check + observe.

    .venv/bin/python bench/passive_bench.py --backends 8 --rate 400 --rounds 5

One run, side by side, on loopback (everything listens on 127.0.0.1 and stops by itself):
  - N backend processes (HTTP/1.1 keep-alive on 127.0.0.1, one process each so one can be SIGKILLed);
  - HAProxy "ours": the config steering renders for a pool with the default passive-health settings
    (retries 3, option redispatch 1, retry-on conn-failure empty-response response-timeout for
    idempotent methods, observe layer4 error-limit 5 on-error mark-down, check only to come back);
  - HAProxy "anchor": the same servers with HAProxy's own health checking as commonly written:
    `check inter 2s fall 3 rise 2 observe layer4 error-limit 10 on-error mark-down` (error-limit 10
    is HAProxy's default; mark-down is its fastest on-error), HAProxy's default retries (3, same server);
  - one load generator process per HAProxy: the same steady rate of GETs over keep-alive connections;
  - our control plane, the product's own processes on a private redis-server and a SQLite DB in a
    temp dir: the web process (`uvicorn config.asgi:application`), a Celery worker and Celery beat
    (so the outlier tick runs every second as in production, in the worker), and the real HAProxy
    agent (steering.agents.haproxy.HAProxyAgent, socket mode on "ours", production defaults: a pass
    every 0.2 s, figures every 1 s, long-poll of the desired state) in a thread of this process,
    with an agent token bound to the PoP, talking to the web process over HTTP only. A report that
    says HAProxy's observe took a server out makes the web process queue an outlier tick at once.
Each round SIGKILLs one backend (both HAProxies lose it at the same instant), waits, restarts it and
lets both take it back. Reported per config: failed requests (non-200 or no answer), requests slower
than 1 s, time from the kill to HAProxy marking the server DOWN; and for ours the time from the kill
to the agent's report of it, to the ejection committed by the control plane (Backend.ejected_at set,
seen from another process; its audited Change), and to HAProxy running the ejection (weight 0 from
the desired state, applied by the agent).
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import logging
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


def bounded(seconds: float, cmd: list[str]) -> list[str]:
    """`cmd` under coreutils timeout: it stops by itself even if this bench dies without cleaning up."""
    return ["timeout", "-k", "5", str(int(seconds)), *cmd]


def start_haproxy(binary: str, cfg: Path, text: str, sock: str, budget: float) -> subprocess.Popen[bytes]:
    cfg.write_text(text)
    check = subprocess.run([binary, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(check.stdout + check.stderr)
    proc = subprocess.Popen(bounded(budget, [binary, "-db", "-f", str(cfg)]), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    from steering.dataplane.haproxy.runtime import Runtime

    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if Runtime(sock).backends():
                return proc
        except Exception:
            time.sleep(0.05)
    raise RuntimeError("haproxy did not start")


def server_stat(sock: str, name: str) -> Any:
    from steering.dataplane.haproxy.runtime import Runtime

    return next((s for s in Runtime(sock).show_stat() if s.name == name and s.backend != "BACKEND"), None)


def status(sock: str, name: str) -> str:
    row = server_stat(sock, name)
    return row.status if row is not None else "?"


def set_weight(sock: str, proxy: str, name: str) -> int | None:
    """The weight the agent set on the server (srv_uweight): 0 once it runs the ejection."""
    from steering.dataplane.haproxy.runtime import Runtime

    return next((s.weight for s in Runtime(sock).show_servers_state(proxy) if s.name == name), None)


class Product:
    """One of the control plane's own processes (web, Celery worker, Celery beat), in its own
    process group, on the bench's DB and Redis (the environment), logging to `log`."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path, budget: float) -> None:
        self.name, self.log_path = name, log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(bounded(budget, cmd), cwd=ROOT, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until(self, ready: Any, what: str, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: no {what} within {seconds:.0f} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def answers_healthz(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:  # noqa: S310 (loopback)
            return bool(r.status == 200)
    except OSError:
        return False


def summary(values: list[float | None]) -> dict[str, float] | None:
    got = [v for v in values if v is not None]
    return {"median": round(statistics.median(got), 3), "max": round(max(got), 3)} if got else None


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
    budget = args.rounds * (args.after + 25) + 180
    load_start = os.getloadavg()
    from probe_bench import setup_django  # bench/ is on sys.path when a bench runs as a script

    from config.embedded import PrivateRedis

    redis = PrivateRedis().start()
    backends: list[Backend] = []
    haps: list[subprocess.Popen[bytes]] = []
    products: list[Product] = []
    loads: list[tuple[Any, Any]] = []
    stop_load = multiprocessing.get_context("fork").Event()
    stop_cp = threading.Event()
    agent_thread: threading.Thread | None = None
    try:
        setup_django(tmp, redis.url)
        from django.contrib.auth.models import User
        from django.db import connection, connections
        from django.utils import timezone

        from steering.agents.contract import ContractClient
        from steering.agents.haproxy import HAProxyAgent
        from steering.choices import Role
        from steering.dataplane.haproxy.desired import pop_spec
        from steering.dataplane.haproxy.render import render
        from steering.models import Backend as BackendRow
        from steering.models import Change, Pool, PoP, Region, Service
        from steering.services.context import Actor
        from steering.services.tokens import do_create_token

        backends = [Backend(f"b{i}", free_port(), budget) for i in range(args.backends)]
        region = Region.objects.create(slug="bench", name="Bench", latitude=0, longitude=0)
        pop = PoP.objects.create(region=region, slug="bench", name="Bench", city="Loopback", latitude=0, longitude=0)
        service = Service.objects.create(slug="api", fqdn="api.example.net", protocol="http")
        pool = Pool.objects.create(pop=pop, service=service, slug="web")
        for b in backends:
            BackendRow.objects.create(pool=pool, name=b.name, address="127.0.0.1", port=b.port, health="up",
                                      capacity_rps=1000)
        owner = User.objects.create_superuser("bench", password="bench-pass-123")
        _token, raw_token = do_create_token(owner, name="bench-haproxy", role=Role.AGENT, pop=pop,
                                            actor=Actor.system("bench"))
        ours_sock, anchor_sock = str(tmp / "ours.sock"), str(tmp / "anchor.sock")
        ours_port, anchor_port = free_port(), free_port()
        spec = pop_spec(pop)
        proxy = spec.pools[0].proxy
        text = render(spec, socket_path=ours_sock, binds={"api": ("127.0.0.1", ours_port)}).text
        haps.append(start_haproxy(binary, tmp / "ours.cfg", text, ours_sock, budget))
        haps.append(start_haproxy(binary, tmp / "anchor.cfg", anchor_config(anchor_sock, anchor_port, backends),
                                  anchor_sock, budget))

        # The control plane's processes, on this bench's SQLite file and Redis (STEERING_VAR_DIR and
        # REDIS_URL are in the environment since setup_django; DATABASE_URL names the same file).
        # STEERING_LOCAL_SECRET_KEY: a throwaway install's own secret key (settings refuse to start
        # without one), as tests/processes.subprocess_env gives the test suite's processes.
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}",
               "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "WARNING", "STEERING_LOCAL_SECRET_KEY": "1"}
        env.pop("STEERING_DATAPLANE_CONFIRM", None)  # the default (on), as in production
        web_port = free_port()
        web_url = f"http://127.0.0.1:{web_port}"
        python = sys.executable
        web = Product("web", [python, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                              "--port", str(web_port), "--lifespan", "off", "--no-access-log"],
                      env, tmp / "web.log", budget)
        products.append(web)
        # As runstack starts them; INFO so the worker says when it is ready.
        worker = Product("worker", [python, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
                                    "--concurrency", "2", "--queues", "celery,probes", "--without-mingle",
                                    "--without-gossip", "--hostname", f"bench-{web_port}@%h"],
                         env, tmp / "worker.log", budget)
        products.append(worker)
        beat = Product("beat", [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "WARNING"],
                       env, tmp / "beat.log", budget)
        products.append(beat)
        web.wait_until(lambda: answers_healthz(web_url), "answer on /healthz")
        worker.wait_until(lambda: " ready." in worker.log(), "'ready' in its log")
        beat.wait_until(lambda: True, "start")

        connections.close_all()  # load children must not share the DB connection
        ctx = multiprocessing.get_context("fork")
        for port in (ours_port, anchor_port):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=load_process, args=(port, args.rate, args.threads, stop_load, theirs), daemon=True)
            proc.start()
            loads.append((proc, mine))

        down_reports: list[tuple[float, set[int]]] = []

        class TimedClient(ContractClient):
            """The agent's own client; only notes when it sent a report saying "observe took it out"
            (the time it was sent, once the control plane took it)."""

            def report(self, **observations: Any) -> Any:
                sent = time.time()
                answer = super().report(**observations)
                down = {int(bid) for bid, f in (observations.get("servers") or {}).items() if f.get("observed_down")}
                if down:
                    down_reports.append((sent, down))
                return answer

        client = TimedClient(web_url, raw_token, "local", pop=pop.slug, instance="bench",
                             user_agent="steering-haproxy-agent")
        (tmp / "agent").mkdir()
        agent = HAProxyAgent(client, pop=pop.slug, socket=ours_sock, state_dir=tmp / "agent", spawn=False)
        agent_thread = threading.Thread(target=agent.run, args=(stop_cp.is_set,), kwargs={"period": 0.2},
                                        name="haproxy-agent", daemon=True)
        agent_thread.start()
        deadline = time.monotonic() + 60
        while not (agent.follower.acked >= 0 and agent.connected and agent.spec is not None):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not apply the desired state: {agent.follower.last_error}")
            time.sleep(0.1)
        time.sleep(3.0)  # warm: connections open, a few figures in each window

        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            victim = backends[r % len(backends)]
            row = BackendRow.objects.get(pool=pool, name=victim.name)
            t_kill = victim.kill()
            down: dict[str, float | None] = {"ours": None, "anchor": None}
            ejected: float | None = None
            weight0: float | None = None
            while time.time() - t_kill < args.after:
                now = time.time()
                for who, sock in (("ours", ours_sock), ("anchor", anchor_sock)):
                    if down[who] is None and status(sock, victim.name).startswith("DOWN"):
                        down[who] = now - t_kill
                if ejected is None and BackendRow.objects.filter(pk=row.pk, ejected_at__isnull=False).exists():
                    ejected = now - t_kill
                if weight0 is None and set_weight(ours_sock, proxy, victim.name) == 0:
                    weight0 = now - t_kill
                time.sleep(0.01)
            after_kill = datetime.datetime.fromtimestamp(t_kill, tz=datetime.UTC)
            audit = (Change.objects.filter(action="backend.eject", object_type="backend", object_id=row.pk,
                                           time__gte=after_kill).order_by("time").first())
            row.refresh_from_db()
            reported = next((at - t_kill for at, ids in down_reports if at >= t_kill and row.pk in ids), None)
            rounds.append({
                "victim": victim.name, "t_kill": t_kill, "haproxy_down_s": down, "ejected_s": ejected,
                "agent_reported_s": reported,
                "eject_tick_started_s": (row.ejected_at.timestamp() - t_kill) if row.ejected_at else None,
                "audited_s": (audit.time.timestamp() - t_kill) if audit else None,
                "haproxy_weight0_s": weight0, "reason": row.ejection_reason if row.ejected_at else "",
            })
            victim.start()
            # Back to the start: the control plane ends the ejection (as its time running out would),
            # the agent puts the weight back, both HAProxies' checks take the server back.
            BackendRow.objects.filter(pk=row.pk, ejected_at__isnull=False).update(ejected_until=timezone.now())
            deadline = time.time() + 20
            while time.time() < deadline and not (
                    status(ours_sock, victim.name).startswith("UP") and status(anchor_sock, victim.name).startswith("UP")
                    and not BackendRow.objects.filter(pk=row.pk, ejected_at__isnull=False).exists()
                    and (set_weight(ours_sock, proxy, victim.name) or 0) > 0):
                time.sleep(0.1)
            time.sleep(2.0)
        stop_load.set()
        results = [conn.recv() for _, conn in loads]
        for proc, _ in loads:
            proc.join(15)
        stop_cp.set()
        agent_thread.join(10)
        load_end = os.getloadavg()

        def window(items: list[tuple[float, Any]], t: float) -> int:
            return sum(1 for at, _ in items if t - 0.5 <= at <= t + args.after)

        report: dict[str, Any] = {"backends": args.backends, "rate_per_haproxy": args.rate, "rounds": args.rounds,
                                  "when": datetime.date.today().isoformat(),
                                  "load_average": {"start": [round(x, 2) for x in load_start],
                                                   "end": [round(x, 2) for x in load_end]},
                                  "ours_control_plane": "uvicorn web + Celery worker + Celery beat (outlier tick 1 s) "
                                                        "+ HAProxyAgent in socket mode (pass 0.2 s, stats 1 s)"}
        for who, res in zip(("ours", "anchor"), results, strict=True):
            per_round = [window(res["failed"], rd["t_kill"]) for rd in rounds]
            downs = [rd["haproxy_down_s"][who] for rd in rounds if rd["haproxy_down_s"][who] is not None]
            report[who] = {
                "requests": res["ok"] + len(res["failed"]), "failed": len(res["failed"]),
                "failed_per_kill": per_round, "slow_over_1s": len(res["slow"]),
                "failed_kinds": sorted({k for _, k in res["failed"]}),
                "haproxy_down_s": summary(downs),
                "haproxy_down_detected": f"{len(downs)}/{len(rounds)}",
            }
        ejects = [rd["ejected_s"] for rd in rounds if rd["ejected_s"] is not None]
        ours = report["ours"]
        ours["control_plane_ejected_s"] = summary(ejects)
        ours["control_plane_ejected"] = f"{len(ejects)}/{len(rounds)}"
        for key in ("agent_reported_s", "eject_tick_started_s", "audited_s", "haproxy_weight0_s"):
            ours[key] = summary([rd[key] for rd in rounds])
        goal = 1.0
        ours["goal_ejected_within_s"] = goal
        ours["goal_met"] = len(ejects) == len(rounds) and all(
            rd["ejected_s"] <= goal and rd["audited_s"] is not None and rd["audited_s"] <= goal for rd in rounds)
        def rounded(v: Any) -> Any:
            return round(v, 3) if isinstance(v, float) else v

        report["per_round"] = [{**{k: rounded(v) for k, v in rd.items() if k not in ("t_kill", "haproxy_down_s")},
                                "haproxy_down_s": {w: rounded(v) for w, v in rd["haproxy_down_s"].items()}}
                               for rd in rounds]
        print(json.dumps(report, indent=2))
    finally:
        stop_load.set()
        stop_cp.set()
        # The follower's long-poll may still be open when the web process stops: not worth a warning.
        logging.getLogger("steering.agents").setLevel(logging.ERROR)
        for proc, _ in loads:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        if agent_thread is not None:
            agent_thread.join(5)
        for p in reversed(products):
            p.stop()
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
