"""Create the admin user if missing, printing its password (or taking STEERING_ADMIN_PASSWORD)."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from steering.privatefiles import write_private


class Command(BaseCommand):
    help = "Ensure an admin user exists; prints the generated password the first time."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default=os.environ.get("STEERING_ADMIN_USER", "admin"))

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        username = options["username"]
        given = os.environ.get("STEERING_ADMIN_PASSWORD", "")
        user = User.objects.filter(username=username).first()
        if user is not None:
            if given and not user.check_password(given):
                user.set_password(given)
                user.save(update_fields=["password"])
                (settings.VAR_DIR / "admin-password.txt").unlink(missing_ok=True)
                self.stdout.write(f"admin user {username!r}: password set from STEERING_ADMIN_PASSWORD")
            else:
                self.stdout.write(f"admin user {username!r} exists (password unchanged)")
            return
        password = given or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if given:
            self.stdout.write(f"admin user {username!r} created with STEERING_ADMIN_PASSWORD")
            return
        # Kept (owner-only) so `make run` can show it again; delete the file once you change it.
        password_file = settings.VAR_DIR / "admin-password.txt"
        write_private(password_file, password + "\n")
        self.stdout.write(f"admin user {username!r} created; password: {password} (also in {password_file})")
