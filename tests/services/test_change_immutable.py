"""Nobody edits or deletes a Change: not through the ORM, not with raw SQL."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import DatabaseError, connection, transaction

from steering.models import Change
from steering.models.audit import ChangeIsImmutable
from steering.services.actions import do_drain
from steering.services.context import Actor
from tests import factories as f


@pytest.fixture
def change(operator):
    b = f.fleet(4).backends.first()
    do_drain(b, actor=Actor(name=operator.username, source="api", user=operator), reason="audit me")
    return Change.objects.get(action="backend.drain")


def test_it_refuses_save_on_an_existing_change(change):
    change.reason = "rewritten history"
    with pytest.raises(ChangeIsImmutable):
        change.save()


def test_it_refuses_delete_and_bulk_update_through_the_orm(change):
    with pytest.raises(ChangeIsImmutable):
        change.delete()
    with pytest.raises(ChangeIsImmutable):
        Change.objects.filter(pk=change.pk).update(reason="x")
    with pytest.raises(ChangeIsImmutable):
        Change.objects.all().delete()


def test_it_refuses_raw_sql_update_in_the_database(change):
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE steering_change SET reason = 'rewritten' WHERE id = %s", [change.pk])
    change.refresh_from_db()
    assert change.reason == "audit me"


def test_it_refuses_raw_sql_delete_in_the_database(change):
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM steering_change WHERE id = %s", [change.pk])
    assert Change.objects.filter(pk=change.pk).exists()


def test_it_keeps_the_history_when_the_actor_is_deleted(change, operator):
    User.objects.filter(pk=operator.pk).delete()
    change.refresh_from_db()
    assert change.actor_id is None
    assert change.actor_name == "otto-operator"
    assert change.reason == "audit me"


def test_it_refuses_truncate_on_postgresql(change, db_vendor):
    if db_vendor != "postgresql":
        # SQLite has no TRUNCATE statement (its DELETE is refused above); nothing else to prove here.
        assert db_vendor == "sqlite"
        return
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("TRUNCATE steering_change")
    assert Change.objects.filter(pk=change.pk).exists()
