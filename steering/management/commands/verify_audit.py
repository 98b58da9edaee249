"""python manage.py verify_audit: check the audit log's hash chain; exit 0 when intact.

Otherwise exits 1 naming the first broken link: the Change id and what is wrong with it
(steering/readmodels/audit_verify.py)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from steering.readmodels.audit_verify import verify_chain


class Command(BaseCommand):
    help = "Verify the audit log's hash chain (exit 0: intact; 1: names the first broken link)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--chunk-size", type=int, default=2000, help="Rows read from the database at a time")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["chunk_size"] < 1:
            raise CommandError("--chunk-size must be at least 1.")
        verdict = verify_chain(chunk_size=options["chunk_size"])
        if verdict.first_broken is not None:
            broken = verdict.first_broken
            raise CommandError(f"audit log broken at change {broken.id}: {broken.problem} "
                               f"({verdict.checked} changes checked)")
        self.stdout.write(f"audit log intact: {verdict.checked} changes checked")
