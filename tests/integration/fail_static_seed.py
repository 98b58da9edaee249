"""Django code the fail-static test runs against its control plane's own database, as a subprocess
in that control plane's environment (tests.integration.controlplane.ControlPlane.python):

    python -m tests.integration.fail_static_seed seed SPEC.json   the fleet, the tokens, HAProxy's config
    python -m tests.integration.fail_static_seed drain BACKEND_ID  a drain committed through the service
                                                                  layer (a script on the database host:
                                                                  the web process is away)

Each prints one JSON object on its last line of stdout.

The fleet: region fs-region, PoP fs1 announcing the service's prefix (a documentation range), the
service web.example.net (VIP 192.0.2.10: data only, nothing binds it) with one pool of two
backends on 127.0.0.1 (the test's HTTP servers), no monitor (their health stays `up`). The agent
tokens (HAProxy and anycast of fs1, the DNS layer) and a viewer's and an operator's token are
issued through the service layer and written to 0600 files.
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


def seed(spec: dict[str, Any]) -> dict[str, Any]:
    from django.contrib.auth.models import Group, User

    from steering.choices import Role
    from steering.dataplane.haproxy.desired import pop_spec
    from steering.dataplane.haproxy.process import haproxy_binary
    from steering.dataplane.haproxy.render import render, write_config
    from steering.services.context import Actor
    from steering.services.tokens import do_create_token
    from tests import factories as f

    out = Path(spec["dir"])

    def user(name: str, role: str) -> User:
        u = User.objects.create_user(username=name, password=None)
        u.groups.add(Group.objects.get_or_create(name=role)[0])
        return u

    region = f.region(slug="fs-region")
    pop = f.pop(region, slug="fs1")
    svc = f.service(slug="web", protocol="http", fqdn=spec["fqdn"], ttl=20,
                    anycast_prefix=f.prefix(prefix=spec["prefix"]))
    f.vip(svc, region, address=spec["vip"])
    pool = f.pool(pop, svc, slug="web", algorithm="roundrobin", expected_rps=100)
    backends = {name: f.backend(pool, name=name, address="127.0.0.1", port=port, health="up", capacity_rps=1000).pk
                for name, port in spec["backends"].items()}

    system = Actor.system("fail-static seed")
    owner = user("fs-agent-owner", "admin")

    def token(name: str, role: str, file: str, who: User | None = None, **kw: Any) -> str:
        return private(out / file, do_create_token(who or owner, name=name, role=role, actor=system, **kw)[1])

    rendered = render(pop_spec(pop), socket_path=spec["haproxy_socket"],
                      binds={svc.slug: ("127.0.0.1", spec["frontend_port"])})
    binary = haproxy_binary()
    assert binary, "haproxy is not installed"
    write_config(rendered, str(out / "haproxy.cfg"), haproxy=binary)   # checked with haproxy -c
    proxy = pop_spec(pop).pool(pool.pk)
    assert proxy is not None
    return {
        "pop": pop.slug, "backends": backends, "proxy": proxy.proxy, "haproxy_cfg": str(out / "haproxy.cfg"),
        "haproxy_token": token("agent-haproxy-fs1", Role.AGENT, "haproxy.token", pop=pop),
        "anycast_token": token("agent-anycast-fs1", Role.AGENT, "anycast.token", pop=pop),
        "dns_token": token("agent-dns-fs", Role.AGENT, "gslb.token"),
        "viewer_token": token("fs-viewer", Role.VIEWER, "viewer.token", user("fs-viewer", "viewer")),
        "operator_token": token("fs-operator", Role.OPERATOR, "operator.token", user("fs-operator", "operator")),
    }


def drain(backend_id: int) -> dict[str, Any]:
    from steering.models import Backend
    from steering.readmodels.version import current_version
    from steering.services.actions import do_drain
    from steering.services.context import Actor

    # The other backend takes it all: past the capacity guard on purpose.
    do_drain(Backend.objects.get(pk=backend_id), actor=Actor.system("fail-static test"),
             reason="fail-static test: drain while the web process is away", grace_seconds=600, force=True,
             force_reason="test: app-2 takes it")
    return {"version": current_version()}


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    if argv[:1] == ["seed"]:
        result = seed(json.loads(Path(argv[1]).read_text()))
    elif argv[:1] == ["drain"]:
        result = drain(int(argv[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
