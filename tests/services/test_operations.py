"""Operations (steering.services.operations): an abort returns the backends to service, once;
`?wait=` answers when the operation ends, or with it still running."""

from __future__ import annotations

from tests import factories as f


def drain(api, obj_path, **body):
    return api.post(f"/api/v1/{obj_path}/drain/", {"reason": "deploy 1.4.2", **body}, format="json")


def test_it_aborts_a_drain_and_returns_backends_to_service(operator_api):
    pool = f.fleet(3)
    backup = f.fleet(3, pop=pool.pop, service=pool.service, expected_rps=0)
    pool.backup_pool = backup
    pool.save()
    op_id = drain(operator_api, f"pools/{pool.pk}").json()["operation"]["id"]
    r = operator_api.post(f"/api/v1/operations/{op_id}/abort/", {"reason": "wrong pool"}, format="json")
    assert r.status_code == 200
    assert r.json()["status"] == "aborted"
    assert set(pool.backends.values_list("admin_state", flat=True)) == {"ready"}
    assert operator_api.post(f"/api/v1/operations/{op_id}/abort/", {"reason": "again"}, format="json").status_code == 409


def test_it_waits_for_an_operation_to_end(operator_api):
    b = f.fleet(4).backends.first()
    op_id = drain(operator_api, f"backends/{b.pk}", grace_seconds=0).json()["operation"]["id"]
    r = operator_api.get(f"/api/v1/operations/{op_id}/?wait=5")
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    running = drain(operator_api, f"backends/{f.fleet(4).backends.first().pk}", grace_seconds=600).json()["operation"]["id"]
    r = operator_api.get(f"/api/v1/operations/{running}/?wait=0.3")
    assert r.json()["status"] == "running"
    assert operator_api.get(f"/api/v1/operations/{running}/?wait=9999").status_code == 400
    assert operator_api.get(f"/api/v1/operations/{running}/?wait=soon").status_code == 400
