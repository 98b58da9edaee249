"""The anycast layer of the demo: one BIRD "router" and one ExaBGP per demo PoP, on loopback.

`anycast_layer()` gives `manage.py runstack` the command to start and the lines to print (like
steering.gslb.demo.dns_layer). The command, `python -m steering.dataplane.exabgp.demo --api URL
--dir DIR`, issues an operator token for the agents (owner: the first superuser, token name
exabgp-demo; the previous one is revoked), starts BIRD on 127.0.0.1 at a free port and an ExaBGP
per PoP from 127.0.0.2, .3, ... each with our agent polling URL, restarts any that dies, and
stops them all on SIGTERM/SIGINT. `birdc -s DIR/bird/bird.ctl show route` shows who announces what.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from steering.dataplane.exabgp.lab import (
    Bird,
    ExaBGPProcess,
    agent_command,
    bird_binary,
    exabgp_binary,
    speakers_for,
)
from steering.lifecycle import StopRequest

logger = logging.getLogger("steering.exabgp.demo")
TOKEN_NAME = "exabgp-demo"
RESTART_AFTER_SECONDS = 5.0


@dataclass
class AnycastDemo:
    commands: dict[str, list[str]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def anycast_layer(python: str, var_dir: Path, *, api: str) -> AnycastDemo:
    missing = [name for name, found in (("bird", bird_binary()), ("exabgp", exabgp_binary())) if not found]
    if missing:
        return AnycastDemo(lines=[
            f"  anycast:          NOT CONNECTED: {' and '.join(missing)} not installed",
            "                    (apt-get install bird2; pip install -r requirements-dev.txt)",
        ])
    directory = var_dir / "anycast"
    return AnycastDemo(
        commands={"anycast": [python, "-m", "steering.dataplane.exabgp.demo", "--api", api, "--dir", str(directory)]},
        lines=["  anycast:          BIRD on 127.0.0.1 + one ExaBGP per PoP (127.0.0.2...), agents polling the API",
               f"                    birdc -s {directory / 'bird' / 'bird.ctl'} show route"],
    )


def issue_agent_token() -> tuple[list[str], str]:
    """The demo PoPs' slugs and a fresh operator token for their agents (Django needed here only)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connections

    from steering.models import ApiToken, PoP
    from steering.services.context import Actor
    from steering.services.tokens import do_create_token, do_revoke_token

    actor = Actor.system("demo")
    owner = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    if owner is None:
        raise RuntimeError("no superuser to own the agents' token (manage.py ensure_admin)")
    for old in ApiToken.objects.filter(user=owner, name=TOKEN_NAME, revoked_at__isnull=True):
        do_revoke_token(old, actor=actor, reason="the anycast demo restarted")
    _token, raw = do_create_token(owner, name=TOKEN_NAME, role="operator", actor=actor, expires_in_days=1,
                                  reason="agents of the anycast demo")
    pops = list(PoP.objects.order_by("pk").values_list("slug", flat=True))
    connections.close_all()
    return pops, raw


class Supervisor:
    def __init__(self, directory: Path, pops: list[str], api: str, token_file: Path) -> None:
        speakers = speakers_for(pops)
        self.bird = Bird(directory / "bird", speakers)
        self.speakers = {
            s.pop: ExaBGPProcess(directory / "exabgp", s, agent=agent_command(s.pop, api, token_file),
                                 router_port=self.bird.port)
            for s in speakers
        }
        self.last_start: dict[str, float] = {}

    def start(self) -> None:
        self.bird.start()
        for pop, speaker in self.speakers.items():
            speaker.start()
            self.last_start[pop] = time.monotonic()

    def check(self) -> None:
        """Restart what died (not more often than every few seconds)."""
        now = time.monotonic()
        if self.bird.proc is not None and self.bird.proc.poll() is not None:
            logger.warning("bird exited (%s); restarting it", self.bird.proc.returncode)
            self.bird.stop()
            self.bird.start()
        for pop, speaker in self.speakers.items():
            if not speaker.running() and now - self.last_start.get(pop, 0.0) >= RESTART_AFTER_SECONDS:
                logger.warning("exabgp for %s exited; restarting it (log: %s)", pop, speaker.log_path)
                speaker.stop()
                speaker.start()
                self.last_start[pop] = now

    def stop(self) -> None:
        for speaker in self.speakers.values():
            speaker.stop()
        self.bird.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="BIRD + one ExaBGP per demo PoP on loopback.")
    parser.add_argument("--api", required=True, help="the control plane's URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--dir", required=True, type=Path, help="work directory (configs, sockets, logs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s anycast-demo %(message)s")
    args.dir.mkdir(parents=True, exist_ok=True)
    stop = StopRequest()
    supervisor: Supervisor | None = None
    try:
        pops, raw = issue_agent_token()
        if not pops:
            raise RuntimeError("no PoPs in the database (manage.py seed_demo)")
        token_file = args.dir / "agent.token"
        token_file.touch(mode=0o600)
        token_file.chmod(0o600)
        token_file.write_text(raw + "\n")
        supervisor = Supervisor(args.dir, pops, args.api, token_file)
        supervisor.start()
        logger.info("BIRD on 127.0.0.1:%s, ExaBGP for %s", supervisor.bird.port, ", ".join(pops))
    except Exception as exc:
        # runstack stops everything when one part exits: the anycast layer says why and idles instead.
        logger.error("anycast layer not started: %s", exc)
        if supervisor is not None:
            supervisor.stop()
        supervisor = None
    try:
        while not stop():
            if supervisor is not None:
                supervisor.check()
            time.sleep(0.5)
    finally:
        if supervisor is not None:
            supervisor.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
