"""A small traffic generator for the demo: steady HTTP requests through each PoP's HAProxy, and
DNS queries to the demo's PowerDNS (so the DNS layer shows how answers are handed out).

It reads where the frontends are from the HAProxy agents' reports (Redis), so it follows PoPs
as they come and go, and only ever connects to loopback. Requests ask the demo backends to
answer after a while (`?ms=`), so sessions stay open long enough to see on the map, a drain has
sessions to wait for, and HAProxy's figures (sessions, rates) move when an operator acts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from steering.models import ClientNetwork, Service
from steering.readmodels.dataplane import read_haproxy_status


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


async def one_request(host: str, port: int, path: str, timeout: float) -> int:
    """One HTTP/1.1 request on its own connection; returns the status (0 on failure)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return 0
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        await asyncio.wait_for(reader.read(), timeout)
        parts = line.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    except (OSError, TimeoutError, ValueError):
        return 0
    finally:
        writer.close()


class Command(BaseCommand):
    help = "Send demo traffic through every PoP's HAProxy frontends (loopback only; Ctrl-C stops)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rps", type=float, default=6.0, help="Mean requests per second per frontend.")
        parser.add_argument("--mean-ms", type=float, default=2000.0, help="Mean time a backend takes to answer.")
        parser.add_argument("--max-open", type=int, default=800, help="Cap on open requests overall.")
        parser.add_argument("--dns-qps", type=float, default=10.0, help="DNS queries per second (0: none).")
        parser.add_argument("--dns-port", type=int, default=settings.STEERING_DNS_PORT,
                            help="The demo PowerDNS on 127.0.0.1.")

    def handle(self, *args: Any, **options: Any) -> None:
        asyncio.run(self._run(options["rps"], options["mean_ms"], options["max_open"], options["dns_qps"],
                              options["dns_port"]))

    async def _run(self, rps: float, mean_ms: float, max_open: int, dns_qps: float, dns_port: int) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if dns_qps > 0:
            subnets = await asyncio.to_thread(lambda: list(ClientNetwork.objects.values_list("cidr", flat=True)))
            names = await asyncio.to_thread(lambda: list(Service.objects.values_list("fqdn", flat=True)))
            loop.create_task(dns_queries(stop, dns_port, dns_qps, names, subnets))
        open_requests: set[asyncio.Task[int]] = set()
        # Some PoPs are busier than others, as in life; fixed per frontend for a steady picture.
        busyness: dict[tuple[str, int], float] = {}
        frontends: list[tuple[str, int]] = []
        refreshed = 0.0
        while not stop.is_set():
            now = loop.time()
            if now - refreshed > 5:
                refreshed = now
                found = await asyncio.to_thread(read_haproxy_status)
                frontends = sorted({(host, int(port)) for r in found.values() if r.get("connected")
                                    for host, port in (a.rsplit(":", 1) for a in (r.get("frontends") or {}).values())
                                    if _loopback(host)})
                for f in frontends:
                    busyness.setdefault(f, random.uniform(0.4, 1.6))
            tick = 0.1
            for host, port in frontends:
                # Poisson arrivals: on average rps * busyness per second.
                for _ in range(_poisson(rps * busyness[(host, port)] * tick)):
                    if len(open_requests) >= max_open:
                        break
                    ms = int(min(random.expovariate(1 / mean_ms), 30_000))
                    path = random.choice(["/", "/", "/", "/payments/charge"]) + f"?ms={ms}"
                    task = asyncio.create_task(one_request(host, port, path, timeout=ms / 1000 + 10))
                    open_requests.add(task)
                    task.add_done_callback(open_requests.discard)
            try:
                await asyncio.wait_for(stop.wait(), tick)
            except TimeoutError:
                pass
        for task in list(open_requests):
            task.cancel()
        self.stdout.write(json.dumps({"stopped": True, "open": len(open_requests)}))


async def dns_queries(stop: asyncio.Event, port: int, qps: float, names: list[str], subnets: list[str]) -> None:
    """Queries to the demo PowerDNS on loopback, half from "resolvers" in the demo's client networks
    (EDNS client subnet), half without (weighted answers). Without dnspython (a dev requirement),
    or without PowerDNS answering, it stays quiet."""
    try:
        import dns.asyncquery
        import dns.edns
        import dns.message
    except ImportError:
        return
    ipv4 = [n for n in subnets if ":" not in n]
    while not stop.is_set() and names:
        name = random.choice(names)
        options: list[dns.edns.Option] | None = None
        if ipv4 and random.random() < 0.5:
            net = ipaddress.ip_network(random.choice(ipv4))
            options = [dns.edns.ECSOption(str(net.network_address), min(net.prefixlen, 24))]
        query = dns.message.make_query(name, "A", use_edns=0 if options else None, options=options)
        try:
            await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=1)
        except Exception:  # PowerDNS not (yet) up: the demo says so elsewhere
            await asyncio.sleep(1)
        try:
            await asyncio.wait_for(stop.wait(), random.expovariate(qps))
        except TimeoutError:
            pass


def _poisson(mean: float) -> int:
    # Knuth's method; mean is small (well under 10) per 100 ms tick.
    limit, k, p = pow(2.718281828459045, -mean), 0, 1.0
    while True:
        p *= random.random()
        if p <= limit:
            return k
        k += 1
