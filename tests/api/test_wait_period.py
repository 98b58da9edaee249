"""The wait period: a person's change to an object is refused within STEERING_CHANGE_WAIT_SECONDS
of the previous person's change to it (409 `wait_period`, naming who changed it and when to try
again); the system's own changes neither wait nor count; other objects are not held up."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rest_framework.test import APIClient

from steering.models import Backend, Change
from steering.services.operations import sweep_due
from tests import factories as f

API = "/api/v1"


@pytest.fixture
def wait(settings: Any) -> int:
    settings.STEERING_CHANGE_WAIT_SECONDS = 5
    return 5


def act(api: APIClient, verb: str, backend: Backend, **body: Any) -> Any:
    return api.post(f"{API}/backends/{backend.pk}/{verb}/", {"reason": f"{verb} for the test", **body}, format="json")


def test_a_second_change_within_the_wait_is_refused_and_says_who_and_when(wait: int, operator_api: APIClient,
                                                                          admin_api: APIClient) -> None:
    backend = f.fleet(3, capacity_rps=1000, expected_rps=100).backends.first()
    assert act(operator_api, "drain", backend, grace_seconds=600).status_code == 202
    refused = act(admin_api, "undrain", backend)
    assert refused.status_code == 409, refused.content
    body = refused.json()
    assert body["code"] == "wait_period"
    assert body["last_change"] == {"actor": operator_api.user.username, "action": "backend.drain"}
    assert 0 < body["retry_after_seconds"] <= wait
    backend.refresh_from_db()
    assert backend.admin_state == "draining"
    assert not Change.objects.filter(action="backend.undrain").exists()


def test_other_objects_are_not_held_up(wait: int, operator_api: APIClient) -> None:
    first, second = f.fleet(4, capacity_rps=1000, expected_rps=100).backends.order_by("pk")[:2]
    assert act(operator_api, "drain", first, grace_seconds=600).status_code == 202
    assert act(operator_api, "drain", second, grace_seconds=600).status_code == 202


def test_the_systems_changes_neither_wait_nor_count(wait: int, settings: Any, operator_api: APIClient) -> None:
    settings.STEERING_CHANGE_WAIT_SECONDS = 1
    backend = f.fleet(3, capacity_rps=1000, expected_rps=100).backends.first()
    assert act(operator_api, "drain", backend, grace_seconds=0).status_code == 202
    sweep_due()  # the sweeper (system) completes it at once: it does not wait
    backend.refresh_from_db()
    assert backend.admin_state == "drained"
    # ...nor does its change count: after the person's drain has aged past the wait, undrain is fine
    # although the system changed the backend a moment ago.
    time.sleep(1.1)
    assert act(operator_api, "undrain", backend).status_code == 202


def test_off_when_set_to_zero(settings: Any, operator_api: APIClient) -> None:
    settings.STEERING_CHANGE_WAIT_SECONDS = 0
    backend = f.fleet(3, capacity_rps=1000, expected_rps=100).backends.first()
    assert act(operator_api, "drain", backend, grace_seconds=600).status_code == 202
    assert act(operator_api, "undrain", backend).status_code == 202


def test_aborting_an_operation_at_once_is_not_held_up(wait: int, operator_api: APIClient) -> None:
    """A mistaken drain is aborted at once: the abort undoes that operation's own change, it does not flap."""
    backend = f.fleet(3, capacity_rps=1000, expected_rps=100).backends.first()
    answer = act(operator_api, "drain", backend, grace_seconds=600)
    op_id = answer.json()["operation"]["id"]
    aborted = operator_api.post(f"{API}/operations/{op_id}/abort/", {"reason": "wrong backend"}, format="json")
    assert aborted.status_code == 200, aborted.content
    backend.refresh_from_db()
    assert backend.admin_state == "ready"
