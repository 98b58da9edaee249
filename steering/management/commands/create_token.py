"""python manage.py create_token <username> --role viewer|operator|admin --name NAME
   python manage.py create_token --agent --pop fra1 [--name NAME]      (an agent token for fra1's data planes)
   python manage.py create_token --agent --dns [--name NAME]           (an agent token for the GSLB server)"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from steering.choices import ChangeSource, Role
from steering.models import PoP
from steering.roles import HUMAN_ROLES
from steering.services.context import Actor
from steering.services.errors import InvalidInput
from steering.services.tokens import do_create_token


class Command(BaseCommand):
    help = "Issue an API token and print it (shown once; stored only as a hash)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", nargs="?", help="The owner (agent tokens: default the first superuser)")
        parser.add_argument("--role", choices=HUMAN_ROLES)
        parser.add_argument("--agent", action="store_true", help="A data-plane agent's token (role agent)")
        scope = parser.add_mutually_exclusive_group()
        scope.add_argument("--pop", help="Agent tokens: the PoP (slug) whose HAProxy and ExaBGP agents use it")
        scope.add_argument("--dns", action="store_true", help="Agent tokens: for the GSLB server (DNS layer)")
        parser.add_argument("--name", help="What the token is for, e.g. deploy-pipeline (agents: agent-<pop>)")
        parser.add_argument("--days", type=int, default=None, help="Days until it expires (default 90)")

    def handle(self, *args: Any, **options: Any) -> None:
        agent = options["agent"]
        if agent == bool(options["role"]):
            raise CommandError("Give either --role (a person's or a tool's token) or --agent (a data-plane agent's).")
        pop = None
        if agent:
            if not options["pop"] and not options["dns"]:
                raise CommandError("An agent token serves one PoP (--pop SLUG) or the DNS layer (--dns).")
            if options["pop"]:
                pop = PoP.objects.filter(slug=options["pop"]).first()
                if pop is None:
                    raise CommandError(f"No PoP with slug {options['pop']!r}.")
        elif options["pop"] or options["dns"]:
            raise CommandError("--pop and --dns go with --agent.")
        users = get_user_model().objects
        if options["username"]:
            user = users.filter(username=options["username"]).first()
            if user is None:
                raise CommandError(f"No user named {options['username']!r}.")
        elif agent:
            user = users.filter(is_superuser=True, is_active=True).order_by("pk").first()
            if user is None:
                raise CommandError("No admin to own the token: create one first (manage.py ensure_admin).")
        else:
            raise CommandError("Name the token's owner (a username).")
        name = options["name"] or (f"agent-{pop.slug}" if pop else "agent-dns" if agent else None)
        if not name:
            raise CommandError("Give the token a --name, e.g. deploy-pipeline.")
        actor = Actor(name=f"cli:{user.get_username()}", source=ChangeSource.CLI, user=None)
        try:
            _, raw = do_create_token(user, name=name, role=Role.AGENT if agent else options["role"], pop=pop,
                                     expires_in_days=options["days"], actor=actor, reason="manage.py create_token")
        except InvalidInput as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.errors.items())) from exc
        self.stdout.write(raw)
