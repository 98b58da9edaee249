"""The state version, as committed (steering.services.audit.bump_version moves it)."""

from __future__ import annotations

from steering.models import StateVersion


def current_version() -> int:
    row = StateVersion.objects.filter(pk=1).values_list("value", flat=True).first()
    return int(row or 0)
