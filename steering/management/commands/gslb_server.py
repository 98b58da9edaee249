"""`manage.py gslb_server --listen 127.0.0.1:8053`: the PowerDNS remote-backend endpoint (see steering.gslb)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from steering.gslb.server import parse_listen, serve


class Command(BaseCommand):
    help = "Serve DNS answers to PowerDNS (remote backend, HTTP post_json) from an in-memory snapshot."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--listen", default=settings.STEERING_GSLB_LISTEN,
                            help="HOST:PORT to listen on (default %(default)s, STEERING_GSLB_LISTEN).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            parse_listen(options["listen"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"gslb server: PowerDNS remote backend on http://{options['listen']}/dns")
        serve(options["listen"])
