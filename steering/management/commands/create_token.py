"""python manage.py create_token <username> --role viewer|operator|admin --name NAME"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from steering.choices import ChangeSource, Role
from steering.services.context import Actor
from steering.services.errors import InvalidInput
from steering.services.tokens import do_create_token


class Command(BaseCommand):
    help = "Issue an API token for a user and print it (shown once; stored only as a hash)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=[r.value for r in Role])
        parser.add_argument("--name", required=True, help="What the token is for, e.g. deploy-pipeline")
        parser.add_argument("--days", type=int, default=None, help="Days until it expires (default 90)")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}.")
        actor = Actor(name=f"cli:{user.get_username()}", source=ChangeSource.CLI, user=None)
        try:
            _, raw = do_create_token(user, name=options["name"], role=options["role"],
                                     expires_in_days=options["days"], actor=actor, reason="manage.py create_token")
        except InvalidInput as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.errors.items())) from exc
        self.stdout.write(raw)
