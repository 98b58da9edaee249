"""Exit 0 when the 1 s sweeper ran recently (beat ticks and a worker executes), else 1.

The docker-compose healthcheck for worker and beat; also handy by hand.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Check that the timer sweeper ran within --max-age seconds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--max-age", type=float, default=15.0)

    def handle(self, *args: Any, **options: Any) -> None:
        from steering.redis_keys import SWEEP_HEARTBEAT
        from steering.redisconn import sync_client

        raw = sync_client().get(SWEEP_HEARTBEAT)
        if raw is None:
            self.stderr.write("sweeper has never run")
            raise SystemExit(1)
        age = time.time() - float(raw)
        if age > options["max_age"]:
            self.stderr.write(f"sweeper last ran {age:.1f} s ago (limit {options['max_age']:.0f} s)")
            raise SystemExit(1)
        self.stdout.write(f"sweeper ran {age:.1f} s ago")
