"""Two operators draining the same backend at the same moment: one change, not two.

Runs on whichever database is configured: PostgreSQL (row locks, `.ci/run`) and SQLite
(IMMEDIATE transactions, `make test`). Each thread has its own connection.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from steering.models import Backend, Change, Operation
from steering.services.actions import do_drain
from steering.services.context import Actor
from steering.services.errors import StateConflict
from tests import factories as f


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(5))
def test_it_gives_one_change_when_two_drains_race(round_):
    pool = f.fleet(4, capacity_rps=10000)
    backend = pool.backends.first()
    barrier = threading.Barrier(2)
    outcomes: list[str] = []
    lock = threading.Lock()

    def drain(name: str) -> None:
        try:
            barrier.wait(timeout=5)
            do_drain(Backend.objects.get(pk=backend.pk), actor=Actor(name=name, source="api"), reason=f"{name} deploys")
            result = "drained"
        except StateConflict as exc:
            result = exc.code
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=drain, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["already_draining", "drained"]
    assert Change.objects.filter(action="backend.drain", object_id=backend.pk).count() == 1
    assert Operation.objects.filter(kind="drain").count() == 1
    backend.refresh_from_db()
    assert backend.admin_state == "draining"
    assert backend.revision == 2
