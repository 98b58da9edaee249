"""The audit record: who changed what, why, from where, before and after. Append-only.

Shape after NetBox's ObjectChange; written by the service layer inside the action's own
transaction (never by signals, which miss bulk updates and workers). The object is named by
type, id and a copied repr, not a foreign key, so deleting the object leaves its history.
Database triggers (migrations 0002 and 0007) refuse UPDATE and DELETE below the ORM, and a
hash chain (steering/models/audit_chain.py) shows what was done with them lifted.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.db import models
from django.utils import timezone

from steering.choices import ChangeSource


class ChangeIsImmutable(Exception):
    pass


class ChangeQuerySet(models.QuerySet["Change"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise ChangeIsImmutable("Change rows are append-only and cannot be updated.")

    def delete(self) -> NoReturn:  # type: ignore[override]
        raise ChangeIsImmutable("Change rows are append-only and cannot be deleted.")


class Change(models.Model):
    # A default, not auto_now_add: the hash covers the time, so it is set before the row is written.
    time = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    # SET_NULL keeps the history when a user is removed; actor_name keeps who it was.
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    actor_name = models.CharField(max_length=150, db_index=True)
    source = models.CharField(max_length=8, choices=ChangeSource.choices)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=32)
    object_id = models.BigIntegerField()
    object_repr = models.CharField(max_length=300)
    related_type = models.CharField(max_length=32, blank=True)
    related_id = models.BigIntegerField(null=True, blank=True)
    related_repr = models.CharField(max_length=300, blank=True)
    operation_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    reason = models.TextField(blank=True)
    forced = models.BooleanField(default=False, help_text="Went past the capacity guard.")
    force_reason = models.TextField(blank=True, help_text="Why the guard was overridden.")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    version = models.BigIntegerField(help_text="State version this change produced.")
    # The API token the actor authenticated with. An id, not a foreign key: deleting the token keeps the history.
    token_id = models.BigIntegerField(
        null=True, blank=True, help_text="The API token the actor used (none: a session, a command or the system).")
    token_name = models.CharField(max_length=100, blank=True, help_text="That token's name when it acted.")
    prev_hash = models.CharField(
        max_length=64, blank=True, help_text="The hash of the change before this one (empty for the first).")
    hash = models.CharField(max_length=64, blank=True, help_text="SHA-256 over this change's content and prev_hash.")

    objects = ChangeQuerySet.as_manager()

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [
            # Serves "history of this object" (object pages, ?object_type=&object_id=).
            models.Index(fields=["object_type", "object_id", "-time"], name="steering_change_object"),
            models.Index(fields=["related_type", "related_id", "-time"], name="steering_change_related"),
            # Serves "since when is a data plane behind": the first change after the version it applied.
            models.Index(fields=["version"], name="steering_change_version"),
        ]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.object_repr}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ChangeIsImmutable("Change rows are append-only and cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise ChangeIsImmutable("Change rows are append-only and cannot be deleted.")
