"""Agent tokens for what `make run` starts on this host: one per PoP, one for the DNS layer.

The demo runs its agents exactly as a fleet would: each with its own scoped token (role agent),
read from a file only its user can read. A token is minted on first start and reused while it
stays usable; a revoked or expired one is replaced.
"""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.utils import timezone

from steering.choices import Role
from steering.models import ApiToken, PoP
from steering.models.tokens import hash_token
from steering.privatefiles import write_private
from steering.services.context import Actor
from steering.services.tokens import do_create_token, do_revoke_token

DEMO = Actor.system("demo")


def _usable(raw: str) -> bool:
    token = ApiToken.objects.filter(digest=hash_token(raw)).first()
    return token is not None and token.revoked_at is None and token.expires_at > timezone.now()


def agent_token_file(var: Path, pop: PoP | None) -> Path:
    """The file holding the demo's agent token for `pop` (None: the DNS layer), minted if needed."""
    scope = pop.slug if pop is not None else "dns"
    path = var / "agents" / f"{scope}.token"
    if path.exists() and _usable(path.read_text(encoding="utf-8").strip()):
        return path
    owner = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    if owner is None:
        raise RuntimeError("no admin user to own the demo's agent tokens (manage.py ensure_admin)")
    name = f"demo-agent-{scope}"
    for stale in ApiToken.objects.filter(user=owner, name=name, revoked_at__isnull=True):
        # The file was lost or its token no longer works: the old token goes, audited.
        do_revoke_token(stale, actor=DEMO, reason="make run: replaced by a new demo agent token")
    _token, raw = do_create_token(owner, name=name, role=Role.AGENT, pop=pop, actor=DEMO,
                                  reason="make run: the demo's agents use scoped tokens")
    write_private(path, raw + "\n")
    return path
