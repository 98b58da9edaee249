"""Seed the chaos stack's own database: run by the test as a subprocess in the stack's environment
(DATABASE_URL = the private PostgreSQL cluster), `python -m tests.chaos.seed SPEC.json`.

Writes the fleet with the ORM (tests.factories: no Change rows), issues the tokens through the
service layer, writes each token to a 0600 file, renders PoP A's HAProxy config (checked with
`haproxy -c`), and prints what the test needs as one JSON object on stdout.

The fleet:
- region chaos-r1, PoP chaos-a: the pool `web` behind the real HAProxy, monitored by HTTP every
  second (rise 2, fall 2), outlier ejection off (its verdicts depend on traffic timing: the count
  of Changes must be exact), one backend per name in the spec, all on 127.0.0.1; it announces
  the service's anycast prefix (a documentation range, 198.51.100.0/24) through its ExaBGP to BIRD;
- region chaos-r2, PoP chaos-b (not announcing: no anycast layer to wait for): the pool `web`
  with no monitor and no data plane of its own, the target of the layered drain;
- the service's VIP in each region (documentation addresses: data only, nothing binds them).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def private(path: Path, text: str) -> str:
    path.touch(mode=0o600)
    path.write_text(text + "\n")
    return str(path)


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth.models import Group, User

    from steering.choices import Role
    from steering.dataplane.haproxy.desired import pop_spec
    from steering.dataplane.haproxy.process import haproxy_binary
    from steering.dataplane.haproxy.render import render, write_config
    from steering.services.context import Actor
    from steering.services.tokens import do_create_token
    from tests import factories as f

    spec: dict[str, Any] = json.loads(Path(argv[0]).read_text())
    out_dir = Path(spec["dir"])

    def user(name: str, role: str, **kw: Any) -> User:
        u = User.objects.create_user(username=name, password=None, **kw)
        u.groups.add(Group.objects.get_or_create(name=role)[0])
        return u

    admin = user("chaos-admin", "admin", is_superuser=True, is_staff=True)
    operator = user("chaos-operator", "operator")

    r1 = f.region(slug="chaos-r1", name="Chaos one")
    r2 = f.region(slug="chaos-r2", name="Chaos two", latitude=40.0, longitude=-70.0)
    pop_a = f.pop(r1, slug="chaos-a", name="Chaos A")
    pop_b = f.pop(r2, slug="chaos-b", name="Chaos B", announce="withdraw", latitude=40.7, longitude=-74.0)
    # The VIPs lie outside the prefix: DNS steering is the same as without it (steering.whatif).
    service = f.service(slug="chaos-web", fqdn="chaos.example.net", protocol="http", ttl=spec["ttl"],
                        anycast_prefix=f.prefix(prefix=spec["prefix"]))
    f.vip(service, r1, address="192.0.2.51")
    f.vip(service, r2, address="192.0.2.52")
    monitor = f.monitor(slug="chaos-http", kind="http", path="/", interval_seconds=1.0, timeout_seconds=0.5,
                        rise=2, fall=2)
    pool_a = f.pool(pop_a, service, slug="web", algorithm="roundrobin", monitor=monitor, expected_rps=50,
                    min_healthy_percent=10, outlier_detection=False, default_grace_seconds=10)
    pool_b = f.pool(pop_b, service, slug="web", algorithm="roundrobin", expected_rps=20, min_healthy_percent=10,
                    default_grace_seconds=10)
    backends: dict[str, int] = {}
    for name, port in spec["pop_a"].items():
        weight = spec["weights"].get(name, 100)
        backends[name] = f.backend(pool_a, name=name, address="127.0.0.1", port=port, health="up",
                                   capacity_rps=1000, weight=weight).pk
    for i, name in enumerate(spec["pop_b"]):
        # Never probed (no monitor) and never sent traffic (no data plane): the ports are only names.
        backends[name] = f.backend(pool_b, name=name, address="127.0.0.1", port=9 + i, health="up",
                                   capacity_rps=1000).pk

    system = Actor.system("chaos-seed")
    operator_token = do_create_token(operator, name="chaos-operator", role=Role.OPERATOR, actor=system)[1]
    haproxy_token = do_create_token(admin, name="agent-chaos-a", role=Role.AGENT, pop=pop_a, actor=system)[1]
    dns_token = do_create_token(admin, name="agent-chaos-dns", role=Role.AGENT, actor=system)[1]
    anycast_token = do_create_token(admin, name="agent-chaos-a-anycast", role=Role.AGENT, pop=pop_a, actor=system)[1]

    binary = haproxy_binary()
    assert binary, "haproxy is not installed"
    rendered = render(pop_spec(pop_a), socket_path=spec["haproxy_socket"],
                      binds={service.slug: ("127.0.0.1", spec["frontend_port"])})
    write_config(rendered, spec["haproxy_cfg"], haproxy=binary)

    print(json.dumps({
        "pop_a": pop_a.slug, "pop_a_id": pop_a.pk, "pop_b": pop_b.slug, "pop_b_id": pop_b.pk, "pool_a": pool_a.pk, "pool_b": pool_b.pk,
        "service": service.slug, "backends": backends,
        "operator_token": private(out_dir / "operator.token", operator_token),
        "haproxy_token": private(out_dir / "haproxy.token", haproxy_token),
        "dns_token": private(out_dir / "dns.token", dns_token),
        "anycast_token": private(out_dir / "anycast.token", anycast_token),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
