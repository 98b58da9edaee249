"""Maintenance (steering.services.actions.do_maintenance): a backend in maintenance takes no
traffic, and asking again while it is there is a conflict."""

from __future__ import annotations

from tests import factories as f


def test_it_puts_a_backend_in_maintenance_and_back(operator_api):
    pool = f.fleet(4)
    b = pool.backends.first()
    r = operator_api.post(f"/api/v1/backends/{b.pk}/maintenance/", {"reason": "disk swap"}, format="json")
    assert r.status_code == 202
    b.refresh_from_db()
    assert b.admin_state == "maint"
    assert operator_api.get(f"/api/v1/backends/{b.pk}/").json()["effective_weight"] == 0
    r = operator_api.post(f"/api/v1/backends/{b.pk}/maintenance/", {"reason": "again"}, format="json")
    assert r.status_code == 409
