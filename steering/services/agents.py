"""The agent contract, write side: agents acknowledge versions and report what they observe.

An ACK or NACK is an observation of a data plane, not an operator's change: it writes the
DataplaneState row (no Change row, nothing in it steers traffic) and pushes it live. Replayed or
old acknowledgements move nothing: the row only moves forward, by compare-and-set. The read side
(last contact, desired vs applied) is steering.readmodels.dataplane and steering.dataplane.status.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from steering.models import DataplaneState, PoP
from steering.readmodels.version import current_version
from steering.redis_keys import AGENTS_SEEN
from steering.redisconn import sync_client
from steering.services.effects import publish_observed
from steering.services.errors import InvalidInput

logger = logging.getLogger(__name__)

# The DB copy of "last seen" is refreshed at most this often: it is for after a Redis loss.
SEEN_RESOLUTION = datetime.timedelta(seconds=30)


@dataclass(frozen=True)
class AgentIdentity:
    layer: str
    pop: PoP | None
    instance: str
    token_name: str = ""

    @property
    def scope(self) -> str:
        return self.pop.slug if self.pop is not None else "dns"

    @property
    def seen_field(self) -> str:
        return f"{self.layer}:{self.scope}:{self.instance}"


def _row(identity: AgentIdentity) -> DataplaneState:
    lookup = {"layer": identity.layer, "pop": identity.pop, "instance": identity.instance}
    row = DataplaneState.objects.filter(**lookup).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            return DataplaneState.objects.create(**lookup, agent_token_name=identity.token_name)
    except IntegrityError:  # another request of the same agent created it first
        return DataplaneState.objects.get(**lookup)


def record_seen(identity: AgentIdentity, info: dict[str, Any] | None = None, *, now: float | None = None) -> None:
    """The agent made contact: a heartbeat in Redis, copied to the DB now and then."""
    at = now if now is not None else time.time()
    body = {"at": at, "token": identity.token_name, **({"info": info} if info else {})}
    try:
        sync_client().hset(AGENTS_SEEN, identity.seen_field, json.dumps(body))
    except Exception as exc:  # Redis away: the DB copy below still moves (less precisely)
        logger.debug("agent heartbeat not kept in Redis: %s", exc)
    row = _row(identity)
    stamp = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    if row.seen_at is None or stamp - row.seen_at >= SEEN_RESOLUTION or (info and info != row.agent_info):
        DataplaneState.objects.filter(pk=row.pk).update(
            seen_at=stamp, agent_token_name=identity.token_name or row.agent_token_name,
            **({"agent_info": info} if info else {}))


@dataclass(frozen=True)
class AckResult:
    accepted: bool
    applied_version: int
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "applied_version": self.applied_version, "detail": self.detail}


def acknowledge(identity: AgentIdentity, *, version: int, etag: str = "", error: str = "") -> AckResult:
    """ACK (error empty) or NACK `version` for this agent. Only a newer version moves the row."""
    current = current_version()
    if version > current:
        raise InvalidInput({"version": [f"Version {version} does not exist yet (the latest is {current})."]})
    row = _row(identity)
    now = timezone.now()
    if error:
        # A NACK of an old version says nothing about the present: only the newest refusal counts.
        moved = DataplaneState.objects.filter(pk=row.pk).filter(
            Q(error_version__isnull=True) | Q(error_version__lt=version), applied_version__lt=version,
        ).update(error=error[:4000], error_version=version, error_at=now)
        detail = (f"refusal of version {version} recorded" if moved else
                  f"ignored: version {version} is not newer than what was applied or refused before")
    else:
        # Compare-and-set: a replayed or late ACK of an older version never moves applied back.
        moved = DataplaneState.objects.filter(pk=row.pk, applied_version__lt=version).update(
            applied_version=version, applied_etag=etag[:80], applied_at=now)
        if moved:
            # An error of a version now superseded by an applied one is history, not the present.
            DataplaneState.objects.filter(pk=row.pk, error_version__lte=version).update(
                error="", error_version=None, error_at=None)
        detail = f"version {version} applied" if moved else f"ignored: version {version} is not newer than applied"
    row.refresh_from_db()
    if moved:
        publish_observed({"type": "observed", "layer": identity.layer, "pop": row.pop_id, "dataplane": {
            "instance": row.instance, "applied_version": row.applied_version, "error": row.error,
            "error_version": row.error_version, "at": time.time()}})
    return AckResult(bool(moved), row.applied_version, detail)
