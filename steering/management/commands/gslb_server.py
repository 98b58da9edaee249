"""`manage.py gslb_server --listen 127.0.0.1:8053 [--api URL] [--token-file F] [--state-dir D]`:
a launcher of the GSLB server agent for the demo (runstack) and a developer's machine.

The GSLB server itself is `steering-agent gslb` (steering.agents.gslb): it needs no database and
no Redis, only a DNS agent token. Without --token-file this command keeps one for the demo in
VAR_DIR/gslb/agent.token (0600): reused while it is live, else issued to the first admin
(do_create_token, role agent, no PoP) with the previous demo token revoked. It then replaces
itself (exec) with `python -m steering.agents gslb ...`, so what runs holds no Django and no
database connection. On a DNS host run `steering-agent gslb` directly (deploy/README.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from steering.gslb.server import parse_listen
from steering.privatefiles import write_private

DEMO_TOKEN_NAME = "agent-dns-demo"


def demo_token_file(var_dir: Path) -> Path:
    return var_dir / "gslb" / "agent.token"


def ensure_dns_agent_token(path: Path) -> Path:
    """A live DNS agent token in `path` (0600): the one there if it still works, else a new one."""
    from django.contrib.auth import get_user_model
    from django.db import connections, transaction

    from steering.models import ApiToken
    from steering.models.tokens import hash_token
    from steering.services.context import Actor
    from steering.services.tokens import do_create_token, do_revoke_token

    try:
        if path.exists():
            raw = path.read_text(encoding="utf-8").strip()
            kept = ApiToken.objects.filter(digest=hash_token(raw)).first() if raw else None
            if kept is not None and kept.is_usable and kept.is_agent and kept.pop_id is None:
                return path
        owner = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
        if owner is None:
            raise CommandError("No admin to own the GSLB server's token: run manage.py ensure_admin first.")
        actor = Actor.system("gslb-demo")
        with transaction.atomic():
            for old in ApiToken.objects.filter(user=owner, name=DEMO_TOKEN_NAME, revoked_at__isnull=True):
                do_revoke_token(old, actor=actor, reason="the demo GSLB server got a new token")
            _token, raw = do_create_token(owner, name=DEMO_TOKEN_NAME, role="agent", pop=None, actor=actor,
                                          reason="the demo GSLB server (manage.py gslb_server)")
    finally:
        connections.close_all()
    write_private(path, raw + "\n")
    return path


def agent_command(*, listen: str, api: str, token_file: Path, state_dir: Path, instance: str | None = None) -> list[str]:
    command = [sys.executable, "-m", "steering.agents", "gslb", "--api", api, "--token-file", str(token_file),
               "--listen", listen, "--state-dir", str(state_dir)]
    return command + (["--instance", instance] if instance else [])


class Command(BaseCommand):
    help = "Start the GSLB server (steering-agent gslb) against this control plane, with a demo DNS agent token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--listen", default=settings.STEERING_GSLB_LISTEN,
                            help="HOST:PORT to listen on (default %(default)s, STEERING_GSLB_LISTEN).")
        parser.add_argument("--api", default="http://127.0.0.1:8000",
                            help="The control plane's URL the agent follows (default %(default)s).")
        parser.add_argument("--token-file", type=Path, default=None,
                            help="A DNS agent token (manage.py create_token --agent --dns). Default: a demo "
                                 "token kept in VAR_DIR/gslb/agent.token.")
        parser.add_argument("--state-dir", type=Path, default=None,
                            help="Where the agent keeps its last applied state (default VAR_DIR/gslb).")
        parser.add_argument("--instance", default=None, help="The agent's instance name (default: the host name).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            parse_listen(options["listen"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        var = Path(settings.VAR_DIR)
        token_file = options["token_file"] or ensure_dns_agent_token(demo_token_file(var))
        state_dir = options["state_dir"] or var / "gslb"
        command = agent_command(listen=options["listen"], api=options["api"], token_file=token_file,
                                state_dir=state_dir, instance=options["instance"])
        self.stdout.write(f"gslb server: PowerDNS remote backend on http://{options['listen']}/dns, "
                          f"following {options['api']}")
        self.stdout.flush()
        os.execv(command[0], command)
