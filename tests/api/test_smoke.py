from tests import factories as f


def test_it_drains_a_backend_through_the_api(operator_api):
    pool = f.fleet(4)
    b = pool.backends.first()
    r = operator_api.post(f"/api/v1/backends/{b.pk}/drain/", {"reason": "deploy 1.4.2", "grace_seconds": 30}, format="json")
    assert r.status_code == 202, r.content
    assert r.json()["operation"]["status"] == "running"
