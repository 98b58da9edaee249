"""API tokens for tools: named, expiring, scoped to a role, stored only as a SHA-256 digest.

Tokens are 256 random bits, so an unsalted fast hash is safe (as GitHub does): the digest
cannot be brute-forced, and lookup by digest is one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from steering.choices import Role

TOKEN_PREFIX = "str_"


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def new_raw_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    role = models.CharField(max_length=16, choices=Role.choices)
    # Agent tokens only: the PoP whose data planes the agent serves; none means the DNS layer.
    pop = models.ForeignKey("steering.PoP", on_delete=models.CASCADE, null=True, blank=True,
                            related_name="agent_tokens")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters, shown in lists so people can tell tokens apart; never enough to use.
    hint = models.CharField(max_length=12, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "name"],
                condition=models.Q(revoked_at__isnull=True),
                name="%(app_label)s_%(class)s_unique_live_name_per_user",
                violation_error_message="This user already has a live token with that name.",
            ),
            models.CheckConstraint(
                condition=models.Q(role=Role.AGENT) | models.Q(pop__isnull=True),
                name="%(app_label)s_%(class)s_only_agents_bound_to_pop",
                violation_error_message="Only an agent token is bound to a PoP.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"

    @property
    def is_agent(self) -> bool:
        return self.role == Role.AGENT

    @property
    def agent_scope(self) -> str:
        """What an agent token may serve: a PoP's slug, or "dns" for the DNS layer."""
        return self.pop.slug if self.pop is not None else "dns"

    @property
    def is_usable(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()
