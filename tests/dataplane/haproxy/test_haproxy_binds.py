"""A PoP's HAProxy frontends bind the service's VIPs in the PoP's region, every one of them (IPv4
and IPv6), from the model: the desired state names them, the agent renders a `bind` line each
(haproxy -c accepts it), and an operator's --bind override replaces them."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from steering.agents.contract import Desired
from steering.agents.haproxy import binds_of
from steering.dataplane.desired import desired_spec
from steering.dataplane.haproxy.desired import pop_spec
from steering.dataplane.haproxy.render import render
from tests import factories as f
from tests.dataplane.haproxy.lab import haproxy_binary


def test_the_desired_state_names_every_vip_of_the_pops_region_and_the_agent_binds_them_all(db: Any,
                                                                                           tmp_path: Path) -> None:
    west, east = f.region(), f.region()
    service = f.service(port=8443)
    pop = f.pop(west)
    f.fleet(2, pop=pop, service=service)
    f.vip(service, west, address="127.0.0.41")
    f.vip(service, west, address="::1")
    f.vip(service, east, address="127.0.0.42")            # another region's: not bound here
    f.vip(service, west, address="127.0.0.43", enabled=False)  # out of DNS: not bound either
    spec = desired_spec("local", pop)
    assert sorted(b["address"] for b in spec["binds"][service.slug]) == ["127.0.0.41", "::1"]

    desired = Desired("local", pop.slug, 1, "e", spec)
    binds = binds_of(desired, {})
    assert sorted(binds[service.slug]) == [("127.0.0.41", 8443), ("::1", 8443)]
    text = render(pop_spec(pop), socket_path=str(tmp_path / "x.sock"), binds=binds).text
    assert "    bind 127.0.0.41:8443" in text and "    bind [::1]:8443" in text
    check = tmp_path / "haproxy.cfg"
    check.write_text(text)
    done = subprocess.run([haproxy_binary(), "-c", "-f", str(check)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr

    overridden = binds_of(desired, {service.slug: ("127.2.9.9", 18443)})
    assert overridden[service.slug] == [("127.2.9.9", 18443)]
