"""PowerDNS + our remote backend vs PowerDNS's own LUA records, side by side in one run, on loopback.

    .venv/bin/python bench/dns_bench.py --seconds 5

What runs (everything stops by itself; nothing listens outside 127.0.0.0/8):
  - a private redis-server and a SQLite DB in a temp dir holding the demo topology (seed_demo:
    api.example.net weighted over 4 regions, static.example.net geo by client network);
  - the control plane's web process (uvicorn config.asgi:application) and the GSLB server as the
    agent runs it on a DNS host: `python -m steering.agents gslb` with a DNS agent token
    (`create_token --agent --dns`), no DB or Redis URL in its environment, following the web
    process through the agent contract; pdns_server "ours" in front of it: deploy/pdns/pdns.conf
    (remote backend, post_json, packet and query caches off);
  - pdns_server "lua": the bind backend with a zone file where the same names are LUA records
    (`pickwrandom` over the same VIPs and weights; geo as `netmask()` tests, falling back to
    `pickwrandom`), `enable-lua-records=yes`, caches off too (LUA answers are never cached);
  - the same query mix against each, alternating in --rounds slices, --seconds in all each: dnsperf (Debian
    package dnsperf) when installed, else an asyncio dnspython load generator. Every query
    carries the same EDNS client subnet (198.18.2.0/24).
Reported: qps of each, ours/LUA, our in-server lookup latency p50/p99 (measured per remote-backend
call inside the GSLB server; the window starts at `POST /stats/reset` with the agent's token) and
the HTTP round trip of one lookup (p50/p99, keep-alive client).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ECS_SUBNET = ("198.18.2.0", 24)
QUERIES = [("api.example.net.", "A")] * 3 + [("static.example.net.", "A")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def wait_dns(port: int, timeout: float = 30) -> None:
    import dns.message
    import dns.query

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = dns.query.udp(dns.message.make_query("api.example.net.", "A"), "127.0.0.1", port=port, timeout=1)
            if reply.answer:
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"PowerDNS on port {port} did not answer")


def lua_zone(snapshot: Any) -> str:
    """The same answers as our policy, as PowerDNS LUA records (bind zone file syntax)."""
    zone = snapshot.zones["example.net."]
    lines = [f"$ORIGIN {zone.name}", f"@ 300 IN SOA {zone.soa}"]
    lines += [f"@ 300 IN NS {ns}" for ns in zone.nameservers]
    networks = [(str(net), region) for net, region in _networks(snapshot)]
    for name, service in snapshot.services.items():
        vips = [v for v in service.vips if v.enabled and v.weight > 0 and v.region_id in service.healthy_regions
                and v.family == 4]
        pick = "pickwrandom({" + ", ".join(f"{{{v.weight}, '{v.address}'}}" for v in vips) + "})"
        if service.policy == "geo":
            branches = []
            for cidr, region in networks:
                local = [v for v in vips if v.region_id == region]
                if local:
                    inner = "pickwrandom({" + ", ".join(f"{{{v.weight}, '{v.address}'}}" for v in local) + "})"
                    branches.append(f"if netmask({{'{cidr}'}}) then return {inner} end")
            code = ";" + " ".join(branches) + f" return {pick}"
        else:
            code = pick
        lines.append(f'{name} {service.ttl} IN LUA A "{code}"')
    return "\n".join(lines) + "\n"


def _networks(snapshot: Any) -> list[tuple[Any, int]]:
    from steering.models import ClientNetwork

    rows = [(ipaddress.ip_network(c), r) for c, r in ClientNetwork.objects.values_list("cidr", "region_id")]
    return sorted((row for row in rows if row[0].version == 4), key=lambda row: -row[0].prefixlen)


def start_pdns(config_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    from steering.gslb.pdnsconf import pdns_command, pdns_server_binary

    binary = pdns_server_binary()
    if binary is None:
        raise SystemExit("pdns_server is not installed: apt-get install pdns-server pdns-backend-remote pdns-backend-bind")
    return subprocess.Popen(pdns_command(binary, config_dir), stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def run_dnsperf(port: int, seconds: float, tmp: Path, clients: int) -> dict[str, float]:
    data = tmp / "queries.txt"
    data.write_text("".join(f"{name} {rtype}\n" for name, rtype in QUERIES))
    address, bits = ECS_SUBNET
    octets = bytes(int(x) for x in address.split("."))[: (bits + 7) // 8]
    ecs = (1).to_bytes(2, "big") + bytes([bits, 0]) + octets
    out = subprocess.run(["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(data), "-l", str(seconds),
                          "-c", str(clients), "-q", str(4 * clients), "-E", f"8:{ecs.hex()}"],
                         capture_output=True, text=True, timeout=seconds + 60)
    qps = re.search(r"Queries per second:\s+([\d.]+)", out.stdout)
    lost = re.search(r"Queries lost:\s+(\d+)", out.stdout)
    latency = re.search(r"Average Latency \(s\):\s+([\d.]+)", out.stdout)
    if not qps:
        raise SystemExit(f"dnsperf said:\n{out.stdout}{out.stderr}")
    return {"qps": float(qps.group(1)), "lost": float(lost.group(1)) if lost else 0.0,
            "avg_latency_ms": 1000 * float(latency.group(1)) if latency else 0.0}


def run_asyncio_load(port: int, seconds: float, clients: int) -> dict[str, float]:
    import dns.asyncquery
    import dns.edns
    import dns.message

    async def client(stop: float) -> int:
        n = 0
        while time.monotonic() < stop:
            name, rtype = QUERIES[n % len(QUERIES)]
            query = dns.message.make_query(name, rtype, use_edns=0, options=[dns.edns.ECSOption(*ECS_SUBNET)])
            try:
                await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=2)
                n += 1
            except Exception:
                pass
        return n

    async def main() -> int:
        stop = time.monotonic() + seconds
        return sum(await asyncio.gather(*(client(stop) for _ in range(clients))))

    started = time.monotonic()
    done = asyncio.run(main())
    return {"qps": done / (time.monotonic() - started), "lost": 0.0, "avg_latency_ms": 0.0}


def http_round_trip(port: int, count: int) -> dict[str, float]:
    """One lookup over a keep-alive connection, as PowerDNS's connector does, timed from here."""
    body = json.dumps({"method": "lookup", "parameters": {
        "qname": "api.example.net.", "qtype": "ANY", "remote": "127.0.0.1", "local": "127.0.0.1",
        "real-remote": "198.18.2.0/24", "zone-id": 1}})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        conn.request("POST", "/dns/lookup", body, {"Content-Type": "text/javascript"})
        conn.getresponse().read()
        samples.append(time.perf_counter() - started)
    conn.close()
    samples.sort()
    return {"p50_us": round(samples[len(samples) // 2] * 1e6, 1), "p99_us": round(samples[int(0.99 * len(samples))] * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="load per server (default 5)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent DNS clients")
    parser.add_argument("--rounds", type=int, default=3, help="alternating slices per server (default 3)")
    parser.add_argument("--loader", choices=["auto", "dnsperf", "asyncio"], default="auto")
    args = parser.parse_args()
    loader = args.loader
    if loader == "auto":
        loader = "dnsperf" if shutil.which("dnsperf") else "asyncio"

    from config.embedded import PrivateRedis

    tmp = Path(tempfile.mkdtemp(prefix="dns-bench-"))
    redis = PrivateRedis().start()
    env = dict(os.environ, REDIS_URL=redis.url, DATABASE_URL=f"sqlite:///{tmp / 'bench.sqlite3'}",
               STEERING_VAR_DIR=str(tmp / "var"), DJANGO_SETTINGS_MODULE="config.settings", LOG_LEVEL="WARNING")
    os.environ.update({k: env[k] for k in ("REDIS_URL", "DATABASE_URL", "STEERING_VAR_DIR", "DJANGO_SETTINGS_MODULE")})
    procs: list[subprocess.Popen[bytes]] = []
    try:
        manage = [sys.executable, str(ROOT / "manage.py")]
        env["STEERING_ADMIN_PASSWORD"] = "bench-admin-password"
        for step in (["migrate", "--noinput", "-v0"], ["seed_demo"], ["ensure_admin"]):
            subprocess.run(manage + step, env=env, check=True, stdout=subprocess.DEVNULL)
        # The GSLB server's credential: a DNS agent token (and nothing else), in a 0600 file.
        token = subprocess.run(manage + ["create_token", "--agent", "--dns"], env=env, check=True,
                               capture_output=True, text=True).stdout.strip()
        token_file = tmp / "gslb.token"
        token_file.touch(mode=0o600)
        token_file.write_text(token + "\n")
        import django

        django.setup()
        from steering.gslb.pdnsconf import render, write_config
        from steering.gslb.snapshot import build_from_db

        snapshot = build_from_db(1)
        web_port, gslb_port, ours_port, lua_port = free_port(), free_port(), free_port(), free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(web_port),
             "--lifespan", "off", "--no-access-log"], cwd=ROOT, env=env, stdout=(tmp / "web.log").open("wb"),
            stderr=subprocess.STDOUT, start_new_session=True))
        wait_http(f"http://127.0.0.1:{web_port}/healthz")
        agent_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}  # no DB, no Redis
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "steering.agents", "gslb", "--api", f"http://127.0.0.1:{web_port}",
             "--token-file", str(token_file), "--listen", f"127.0.0.1:{gslb_port}", "--state-dir", str(tmp / "gslb"),
             "--log-level", "WARNING"], cwd=ROOT, env=agent_env, stdout=(tmp / "gslb.log").open("wb"),
            stderr=subprocess.STDOUT, start_new_session=True))
        wait_http(f"http://127.0.0.1:{gslb_port}/healthz")  # 200 once it serves a snapshot
        write_config(tmp / "ours", port=ours_port, backend_url=f"http://127.0.0.1:{gslb_port}/dns")
        procs.append(start_pdns(tmp / "ours", tmp / "pdns-ours.log"))

        lua_dir = tmp / "lua"
        lua_dir.mkdir()
        (lua_dir / "example.net.zone").write_text(lua_zone(snapshot))
        (lua_dir / "named.conf").write_text(f'zone "example.net" {{ type master; file "{lua_dir / "example.net.zone"}"; }};\n')
        template = (ROOT / "deploy" / "pdns" / "pdns.conf").read_text()
        lua_conf = render(template, {
            "launch": "bind", "bind-config": str(lua_dir / "named.conf"), "enable-lua-records": "yes",
            "local-port": str(lua_port), "remote-connection-string": "", "remote-dnssec": "",
            "zone-cache-refresh-interval": "60", "consistent-backends": "yes",
        })
        # The remote-backend settings do not apply to the bind backend: drop them.
        lua_conf = "\n".join(line for line in lua_conf.splitlines() if not line.startswith(("remote-connection", "remote-dnssec")))
        (lua_dir / "pdns.conf").write_text(lua_conf + "\n")
        procs.append(start_pdns(lua_dir, tmp / "pdns-lua.log"))
        wait_dns(ours_port)
        wait_dns(lua_port)

        results: dict[str, Any] = {"loader": loader, "seconds": args.seconds, "clients": args.clients}
        for port in (ours_port, lua_port):
            run_asyncio_load(port, 0.5, 2)  # warm-up
        urllib.request.urlopen(urllib.request.Request(  # a new latency window: POST, with the agent's token
            f"http://127.0.0.1:{gslb_port}/stats/reset", data=b"", method="POST",
            headers={"Authorization": f"Bearer {token}"})).read()
        # Alternate short slices so a neighbour's load on this shared machine hits both alike.
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "lua": []}
        for _ in range(args.rounds):
            for label, port in (("ours", ours_port), ("lua", lua_port)):
                seconds = args.seconds / args.rounds
                runs[label].append(run_dnsperf(port, seconds, tmp, args.clients) if loader == "dnsperf"
                                   else run_asyncio_load(port, seconds, args.clients))
        for label, slices in runs.items():
            results[label] = {key: round(sum(s[key] for s in slices) / len(slices), 1) for key in slices[0]}
            results[label]["qps_per_round"] = [round(s["qps"]) for s in slices]
        with urllib.request.urlopen(f"http://127.0.0.1:{gslb_port}/stats") as r:
            results["ours"]["in_server_lookup"] = json.loads(r.read())
        results["ours"]["http_round_trip"] = http_round_trip(gslb_port, 3000)
        results["ratio_qps_ours_over_lua"] = round(results["ours"]["qps"] / results["lua"]["qps"], 3)
        inside = results["ours"]["in_server_lookup"]
        print(json.dumps(results, indent=2))
        print(f"\nqps: ours {results['ours']['qps']:.0f}, LUA {results['lua']['qps']:.0f}, "
              f"ratio {results['ratio_qps_ours_over_lua']:.2f} (goal >= 0.5)")
        print(f"our lookup inside the server: p50 {inside.get('p50_us')} us, p99 {inside.get('p99_us')} us "
              f"over {inside.get('lookups')} calls (goal p99 < 2000 us); HTTP round trip p50 "
              f"{results['ours']['http_round_trip']['p50_us']} us, p99 {results['ours']['http_round_trip']['p99_us']} us")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
