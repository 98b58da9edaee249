"""What `make run` starts for the local layer: one HAProxy agent per demo PoP, each with its
own agent token, running its own HAProxy (`--spawn`) with frontends on loopback
(127.2.<pop id>.<service id>, the demo's stand-in for the VIPs a fleet binds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from steering.dataplane.haproxy.process import frontend_address, frontend_port
from steering.demo.agent_tokens import agent_token_file
from steering.models import PoP, Service


@dataclass
class LocalLayer:
    commands: dict[str, list[str]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def demo_binds(pop: PoP, services: list[Service]) -> list[str]:
    return [f"{s.slug}={frontend_address(pop.pk, s.pk)}:{frontend_port(s.port)}" for s in services]


def local_layer(python: str, var: Path, *, api: str) -> LocalLayer:
    layer = LocalLayer()
    services = list(Service.objects.order_by("slug"))
    for pop in PoP.objects.order_by("slug"):
        cmd = [python, "-m", "steering.agents", "haproxy", "--pop", pop.slug, "--api", api,
               "--token-file", str(agent_token_file(var, pop)), "--state-dir", str(var / "agents" / pop.slug),
               "--instance", "demo", "--spawn"]
        for bind in demo_binds(pop, services):
            cmd += ["--bind", bind]
        layer.commands[f"haproxy-agent-{pop.slug}"] = cmd
    layer.lines.append("  local layer:      HAProxy per PoP on 127.2.<pop id>.<service id>:8443, "
                       "each driven by `steering-agent haproxy` with its PoP's agent token")
    return layer
