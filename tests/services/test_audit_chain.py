"""The audit log's hash chain: written under the state-version lock, verified by verify_audit and the API.

Tampering needs the append-only triggers out of the way; each test lifts them inside its own
transaction, which the test's rollback puts back. Runs on whichever database is configured.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from steering.models import Change, Region, audit_sql
from steering.models.audit_chain import CHAINED_FIELDS, GENESIS, chain_hash
from steering.readmodels.audit_verify import CHAIN_BROKEN, CONTENT_ALTERED, ROW_MISSING, verify_chain
from steering.services.audit import ChangeSet
from steering.services.context import Actor
from steering.services.topology import do_create, do_update
from tests import factories as f

URL = "/api/v1/changes/verify/"


def write_changes(n: int, *, tag: str = "chain") -> list[Change]:
    region = f.region()
    written = []
    for i in range(n):
        with transaction.atomic():
            written += [ChangeSet(Actor.system("test"), f"{tag} {i}").record(
                "region.update", region, before={"i": i}, after={"i": i + 1})]
    return written


def lift_triggers() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(audit_sql.POSTGRES_DROP)
        else:
            for statement in [*audit_sql.SQLITE_DROP, *audit_sql.SQLITE_CHAIN_DROP]:
                cursor.execute(statement)


def raw(sql: str, params: list[Any]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.mark.django_db
def test_each_change_chains_to_the_one_before(admin):
    do_create(Region, {"slug": "r-1", "name": "R", "latitude": 1.0, "longitude": 2.0},
              actor=Actor(admin.username, "api", admin, "req-1", token_id=7, token_name="ci"), reason="new")
    written = write_changes(3)
    rows = list(Change.objects.order_by("id"))
    assert rows[0].prev_hash == GENESIS
    for before, after in zip(rows, rows[1:], strict=False):
        assert after.prev_hash == before.hash
    for row in rows:
        assert len(row.hash) == 64
        assert row.hash == chain_hash({name: getattr(row, name) for name in CHAINED_FIELDS})
    assert [w.hash for w in written] == [r.hash for r in rows[1:]]
    assert (rows[0].token_id, rows[0].token_name) == (7, "ci")


@pytest.mark.django_db
def test_a_clean_log_verifies(admin):
    do_create(Region, {"slug": "r-1", "name": "Région ünïcode", "latitude": 1.5, "longitude": -2.25},
              actor=Actor(admin.username, "ui", admin), reason='quotes "and" \\ backslashes\nand lines')
    region = Region.objects.get(slug="r-1")
    do_update(region, {"name": "R2"}, actor=Actor.system("test"))
    # Values a database might give back in another form: big and small floats, nesting, nulls.
    with transaction.atomic():
        ChangeSet(Actor.system("test")).record(
            "region.update", region, before={"big": 1e20, "small": 1e-7, "neg": -0.0, "n": None},
            after={"list": [1.5, True, {"z": 1, "a": 2}], "huge": 12345678901234567890, "text": "☃"})
    write_changes(3)
    verdict = verify_chain(chunk_size=2)  # several chunks
    assert (verdict.ok, verdict.checked, verdict.first_broken) == (True, Change.objects.count(), None)
    out = io.StringIO()
    call_command("verify_audit", stdout=out)
    assert f"intact: {Change.objects.count()} changes checked" in out.getvalue()


@pytest.mark.django_db
def test_an_empty_log_verifies():
    assert not Change.objects.exists()
    verdict = verify_chain()
    assert (verdict.ok, verdict.checked, verdict.first_broken) == (True, 0, None)


@pytest.mark.django_db
def test_it_catches_a_reason_rewritten_in_the_database():
    first, middle, last = write_changes(3)
    lift_triggers()
    raw("UPDATE steering_change SET reason = %s WHERE id = %s", ["nothing to see here", middle.pk])
    verdict = verify_chain()
    assert not verdict.ok
    assert verdict.first_broken is not None
    assert (verdict.first_broken.id, verdict.first_broken.problem) == (middle.pk, CONTENT_ALTERED)
    assert verdict.checked == 2
    with pytest.raises(CommandError, match=rf"broken at change {middle.pk}: content altered"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_it_catches_a_row_deleted_from_the_middle():
    first, middle, last = write_changes(3)
    lift_triggers()
    raw("DELETE FROM steering_change WHERE id = %s", [middle.pk])
    verdict = verify_chain()
    assert verdict.first_broken is not None
    assert (verdict.first_broken.id, verdict.first_broken.problem) == (last.pk, ROW_MISSING)
    with pytest.raises(CommandError, match=rf"broken at change {last.pk}: row missing"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_it_catches_the_oldest_rows_deleted():
    first, *_ = write_changes(3)
    lift_triggers()
    raw("DELETE FROM steering_change WHERE id = %s", [first.pk])
    verdict = verify_chain()
    assert verdict.first_broken is not None
    assert verdict.first_broken.problem == ROW_MISSING


@pytest.mark.django_db
def test_it_catches_a_row_rewritten_and_rehashed():
    first, middle, last = write_changes(3)
    assert (middle.pk, last.pk) == (first.pk + 1, first.pk + 2)
    lift_triggers()
    values = {name: getattr(middle, name) for name in CHAINED_FIELDS}
    values["reason"] = "rewritten with care"
    raw("UPDATE steering_change SET reason = %s, hash = %s WHERE id = %s",
        [values["reason"], chain_hash(values), middle.pk])
    verdict = verify_chain()
    assert verdict.first_broken is not None
    assert (verdict.first_broken.id, verdict.first_broken.problem) == (last.pk, CHAIN_BROKEN)


@pytest.mark.django_db
def test_the_api_answers_ok_or_the_first_broken_link(admin, viewer, operator):
    from tests.conftest import token_client

    first, middle, last = write_changes(3)
    admin_api = token_client(admin)
    r = admin_api.get(URL)
    assert r.status_code == 200, r.content
    assert r.json() == {"ok": True, "checked": Change.objects.count(), "first_broken": None}
    lift_triggers()
    raw("UPDATE steering_change SET after = NULL WHERE id = %s", [middle.pk])
    r = admin_api.get(URL)
    assert r.json()["ok"] is False
    assert r.json()["first_broken"] == {"id": middle.pk, "problem": CONTENT_ALTERED}
    for reader in (viewer, operator):
        assert token_client(reader).get(URL).status_code == 403


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_one_unbroken_chain():
    """Writers in several threads, each its own connection: every Change chains to the one committed before."""
    region = f.region()
    threads_n, per_thread = 4, 6
    barrier = threading.Barrier(threads_n)
    failures: list[BaseException] = []

    def write(n: int) -> None:
        try:
            barrier.wait(timeout=10)
            for i in range(per_thread):
                with transaction.atomic():
                    changes = ChangeSet(Actor.system(f"writer-{n}"), f"round {i}")
                    changes.record("region.update", region, before=None, after={"writer": n, "i": i})
                    changes.record("region.update", region, before={"writer": n, "i": i}, after=None)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []
    assert Change.objects.count() == threads_n * per_thread * 2
    verdict = verify_chain(chunk_size=5)
    assert (verdict.ok, verdict.checked) == (True, threads_n * per_thread * 2)
    # No fork: every hash is some row's prev_hash at most once.
    prev_hashes = list(Change.objects.values_list("prev_hash", flat=True))
    assert len(prev_hashes) == len(set(prev_hashes))


@pytest.mark.django_db(transaction=True)
def test_the_migration_chains_the_rows_written_before_it():
    """Back to before 0007, old-shape rows written, forward again: the rows are chained in id order."""
    before_chain = [("steering", "0006_passive_health")]
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(before_chain)
    try:
        old_change = MigrationExecutor(connection).loader.project_state(before_chain).apps.get_model("steering", "Change")
        for i in range(5):
            old_change.objects.create(
                actor_name="system:old", source="system", action="region.touch", object_type="region", object_id=i,
                object_repr=f"old {i}", reason=f"before the chain {i}", before={"x": 1.5} if i % 2 else None,
                after={"i": i, "big": 1e20}, version=i + 1)
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(latest)
    rows = list(Change.objects.order_by("id"))
    assert len(rows) == 5
    assert rows[0].prev_hash == GENESIS and all(len(r.hash) == 64 for r in rows)
    assert [r.prev_hash for r in rows[1:]] == [r.hash for r in rows[:-1]]
    verdict = verify_chain()
    assert (verdict.ok, verdict.checked) == (True, 5)
    # New rows continue the chain, and the triggers are back, covering the new columns too.
    write_changes(2)
    assert verify_chain().ok
    for column, value in (("hash", "0" * 64), ("token_name", "forged"), ("reason", "x")):
        with pytest.raises(DatabaseError), transaction.atomic():
            raw(f"UPDATE steering_change SET {column} = %s WHERE id = %s", [value, rows[2].pk])
    assert Change.objects.get(pk=rows[2].pk).hash == rows[2].hash
    assert rows[0].time <= timezone.now()
