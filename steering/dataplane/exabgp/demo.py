"""The anycast layer of the demo: one BIRD "router" and one ExaBGP per demo PoP, on loopback.

`anycast_layer()` gives `manage.py runstack` the command to start and the lines to print (like
steering.gslb.demo.dns_layer). The command, `python -m steering.dataplane.exabgp.demo --api URL
--dir DIR`, gives each PoP's agent its own agent token (role agent, bound to that PoP, owned by the
first superuser, named agent-anycast-<slug>) in DIR/tokens/<slug>.token (0600; a token still valid
there is reused), starts BIRD on 127.0.0.1 at a free port and an ExaBGP per PoP from 127.0.0.2, .3,
... each running our agent (steering.agents.exabgp, its fail-static state in DIR/state), restarts
any that dies, and stops them all on SIGTERM/SIGINT. `birdc -s DIR/bird/bird.ctl show route` shows
who announces what.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from steering import syspkgs
from steering.dataplane.exabgp.lab import (
    Bird,
    ExaBGPProcess,
    agent_command,
    bird_binary,
    exabgp_binary,
    speakers_for,
)
from steering.lifecycle import StopRequest
from steering.privatefiles import write_private

logger = logging.getLogger("steering.exabgp.demo")
TOKEN_NAME = "agent-anycast-{slug}"
TOKEN_DAYS = 30
LEGACY_TOKEN_NAME = "exabgp-demo"
# A token file is reused while its token stays valid at least this long.
TOKEN_REUSE_MARGIN = datetime.timedelta(days=1)
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
            # BIRD is a system package (deploy/system-packages.txt); ExaBGP a Python one.
            f"                    ({syspkgs.hint('bird')}; exabgp: pip install -r requirements-dev.txt)",
        ])
    directory = var_dir / "anycast"
    return AnycastDemo(
        commands={"anycast": [python, "-m", "steering.dataplane.exabgp.demo", "--api", api, "--dir", str(directory)]},
        lines=["  anycast:          BIRD on 127.0.0.1 + one ExaBGP per PoP (127.0.0.2...), each agent with its PoP's token",
               f"                    birdc -s {directory / 'bird' / 'bird.ctl'} show route"],
    )


def agent_tokens(directory: Path) -> dict[str, Path]:
    """Each PoP's slug -> the file holding its anycast agent's token (Django needed here only).

    A token file whose token is live, bound to that PoP and valid for another day is reused;
    otherwise the PoP's live demo agent tokens are revoked and a new one is written."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connections
    from django.utils import timezone

    from steering.choices import Role
    from steering.models import ApiToken, PoP
    from steering.models.tokens import hash_token
    from steering.services.context import Actor
    from steering.services.tokens import do_create_token, do_revoke_token

    actor = Actor.system("demo")
    owner = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    if owner is None:
        raise RuntimeError("no superuser to own the agents' tokens (manage.py ensure_admin)")
    # Before the agent contract the demo's agents shared one operator token: retire it.
    for old in ApiToken.objects.filter(user=owner, name=LEGACY_TOKEN_NAME, revoked_at__isnull=True):
        do_revoke_token(old, actor=actor, reason="the anycast agents use agent tokens now")
    (directory / "agent.token").unlink(missing_ok=True)
    files: dict[str, Path] = {}
    for pop in PoP.objects.order_by("pk"):
        path = directory / "tokens" / f"{pop.slug}.token"
        name = TOKEN_NAME.format(slug=pop.slug)
        try:
            raw = path.read_text(encoding="utf-8").strip()
        except OSError:
            raw = ""
        kept = ApiToken.objects.filter(
            digest=hash_token(raw), role=Role.AGENT, pop=pop, user__is_active=True, revoked_at__isnull=True,
            expires_at__gt=timezone.now() + TOKEN_REUSE_MARGIN).exists() if raw else False
        if not kept:
            for old in ApiToken.objects.filter(user=owner, name=name, revoked_at__isnull=True):
                do_revoke_token(old, actor=actor, reason="the anycast demo issues a new agent token")
            _token, raw = do_create_token(owner, name=name, role=Role.AGENT, pop=pop, actor=actor,
                                          expires_in_days=TOKEN_DAYS, reason=f"the anycast demo's agent for {pop.slug}")
            write_private(path, raw + "\n")
        path.chmod(0o600)
        files[pop.slug] = path
    connections.close_all()
    return files


class Supervisor:
    def __init__(self, directory: Path, api: str, tokens: dict[str, Path]) -> None:
        speakers = speakers_for(list(tokens))
        self.bird = Bird(directory / "bird", speakers)
        self.state_dir = directory / "state"
        self.speakers = {
            s.pop: ExaBGPProcess(directory / "exabgp", s, router_port=self.bird.port,
                                 agent=agent_command(s.pop, api, tokens[s.pop], self.state_dir))
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
        tokens = agent_tokens(args.dir)
        if not tokens:
            raise RuntimeError("no PoPs in the database (manage.py seed_demo)")
        supervisor = Supervisor(args.dir, args.api, tokens)
        supervisor.start()
        logger.info("BIRD on 127.0.0.1:%s, ExaBGP for %s", supervisor.bird.port, ", ".join(tokens))
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
