"""A HAProxy we start and reload ourselves (the demo, a single-host install), one per PoP.

In a fleet HAProxy is started by the PoP host's init system and we only talk to its admin
socket; `--spawn` on the agent makes this module do that part too. Master-worker mode (-W):
SIGUSR2 to the master re-reads the config, and `expose-fd listeners` (render.py) lets the new
worker take over the listening sockets, so a reload drops no connection.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from steering.dataplane.haproxy.model import PopSpec
from steering.dataplane.haproxy.render import render, write_config
from steering.dataplane.haproxy.runtime import Runtime

logger = logging.getLogger(__name__)


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
                                            if os.access(p, os.X_OK)), None)


def frontend_address(pop_index: int, service_index: int) -> str:
    """A PoP's service frontend on its own loopback address, 127.2.<pop>.<service> (1..254 each),
    so services sharing a port (443) never collide."""
    if not (1 <= pop_index <= 254 and 1 <= service_index <= 254):
        raise ValueError(f"PoP {pop_index} / service {service_index} do not fit 127.2.<pop>.<service>")
    return str(ipaddress.ip_address(f"127.2.{pop_index}.{service_index}"))


def frontend_port(service_port: int) -> int:
    """The service's own port when unprivileged, else 8000 + port (443 -> 8443): the demo runs
    without privileges and never takes a well-known port."""
    return service_port if service_port >= 1024 else 8000 + service_port


@dataclass
class ManagedHAProxy:
    pop: str
    directory: Path
    binds: dict[str, list[tuple[str, int]]]   # service slug -> the (address, port)s its frontend binds
    proc: subprocess.Popen[bytes] | None = None
    # Set by stop(): the agent is shutting down. Its follower thread may still be inside a long-poll
    # and apply one more version after the stop; that must not start a HAProxy nobody will stop.
    stopped: bool = False

    @property
    def config_path(self) -> Path:
        return self.directory / f"{self.pop}.cfg"

    @property
    def socket_path(self) -> str:
        return str(self.directory / f"{self.pop}.sock")

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.pop}.log"

    def write(self, spec: PopSpec, binary: str) -> list[str]:
        """Render and validate (`haproxy -c`) the config; returns the renderer's warnings."""
        self.directory.mkdir(parents=True, exist_ok=True)
        rendered = render(spec, socket_path=self.socket_path, binds=self.binds)
        write_config(rendered, str(self.config_path), haproxy=binary)
        return list(rendered.warnings)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def answering(self) -> bool:
        try:
            Runtime(self.socket_path).backends()
            return True
        except Exception:
            return False

    def start(self, spec: PopSpec, binary: str) -> None:
        if self.stopped:
            logger.info("haproxy %s: not started, the agent is stopping", self.pop)
            return
        self.write(spec, binary)
        log = open(self.log_path, "ab")  # noqa: SIM115  (the child holds it; closed with our copy below)
        try:
            self.proc = subprocess.Popen([binary, "-W", "-db", "-f", str(self.config_path)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        logger.info("haproxy %s: started (pid %s), frontends %s", self.pop, self.proc.pid, self.binds)

    def reload(self, spec: PopSpec, binary: str) -> None:
        """New pools or services need a config: write it, then SIGUSR2 the master."""
        if self.stopped:
            return
        self.write(spec, binary)
        if self.running():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGUSR2)
            logger.info("haproxy %s: reloaded for new pools", self.pop)
        else:
            self.start(spec, binary)

    def stop(self) -> None:
        self.stopped = True
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
