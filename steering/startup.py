"""Checks a serving process (web, worker, beat) makes before it takes any work."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def refuse_unsafe_start(process: str) -> None:
    """No serving on a made-up SECRET_KEY outside a local install: sessions signed with a key that
    differs per host (or that a stolen VAR_DIR gives away) are not what a fleet wants."""
    if settings.SECRET_KEY_MADE_UP and not (settings.DEBUG or settings.STEERING_LOCAL_SECRET_KEY):
        raise ImproperlyConfigured(
            f"{process}: SECRET_KEY (or SECRET_KEY_FILE) must be set. "
            "For a local try-out, `make run` starts everything with a key of its own.")
