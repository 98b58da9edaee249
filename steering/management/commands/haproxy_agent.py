"""Run the HAProxy agent: sync, reconcile and stats for each PoP's HAProxy (dataplane/haproxy/agent.py)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from steering.dataplane.haproxy.agent import HAProxyAgent
from steering.lifecycle import StopRequest


class Command(BaseCommand):
    help = "Keep each PoP's HAProxy on the desired state and collect its figures (Ctrl-C stops)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pop", action="append", dest="pops", metavar="SLUG",
                            help="Only this PoP (repeatable); default: every PoP.")
        parser.add_argument("--spawn", action="store_true",
                            help="Start and reload a HAProxy per PoP ourselves (the demo), frontends on 127.2.<pop id>.<service id>.")
        parser.add_argument("--reconcile-seconds", type=float, default=15.0)
        parser.add_argument("--stats-seconds", type=float, default=1.0)

    def handle(self, *args: Any, **options: Any) -> None:
        agent = HAProxyAgent(options["pops"], spawn=options["spawn"], reconcile_seconds=options["reconcile_seconds"],
                             stats_seconds=options["stats_seconds"])
        stop = StopRequest()
        self.stdout.write(f"haproxy agent: {'spawning and ' if options['spawn'] else ''}driving "
                          f"{', '.join(options['pops']) if options['pops'] else 'every PoP'}")
        try:
            agent.run(stop)
        finally:
            agent.stop()
