"""Rules around backends: names resolved without DNS, no delete under a running operation."""

from __future__ import annotations

from steering import hosts as hosts_module
from steering.models import Backend
from steering.services import allowlist
from tests import factories as f


def test_it_accepts_a_hostname_the_hosts_file_puts_on_loopback(admin_api, tmp_path, monkeypatch):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost app-7.internal\n::1 localhost ip6-localhost\n# 192.0.2.5 commented\n")
    monkeypatch.setattr(hosts_module, "HOSTS_FILE", hosts)
    pool = f.pool()
    r = admin_api.post("/api/v1/backends/", {"pool": pool.pk, "name": "app-7", "address": "app-7.internal", "port": 8080},
                       format="json")
    assert r.status_code == 201, r.content
    assert allowlist.hosts_file_addresses("LOCALHOST") == ["127.0.0.1", "::1"]


def test_it_refuses_a_name_it_would_have_to_ask_dns_about(admin_api, tmp_path, monkeypatch):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    monkeypatch.setattr(hosts_module, "HOSTS_FILE", hosts)

    def no_dns(*args, **kwargs):
        raise AssertionError("a DNS lookup was attempted")

    monkeypatch.setattr("socket.getaddrinfo", no_dns)
    pool = f.pool()
    r = admin_api.post("/api/v1/backends/", {"pool": pool.pk, "name": "app-8", "address": "app-8.example.net", "port": 8080},
                       format="json")
    assert r.status_code == 400
    assert "without DNS" in r.json()["errors"]["address"][0]


def test_it_refuses_to_delete_a_backend_while_it_drains(admin_api, operator_api):
    b = f.fleet(4).backends.first()
    assert operator_api.post(f"/api/v1/backends/{b.pk}/drain/", {"reason": "x", "grace_seconds": 60}, format="json").status_code == 202
    r = admin_api.delete(f"/api/v1/backends/{b.pk}/")
    assert r.status_code == 409 and r.json()["code"] == "operation_running"
    assert Backend.objects.filter(pk=b.pk).exists()


def test_it_refuses_to_delete_a_backend_under_a_weight_ramp(admin_api, operator_api):
    b = f.fleet(4, capacity_rps=100000).backends.first()
    r = operator_api.post(f"/api/v1/backends/{b.pk}/weight/", {"reason": "canary", "weight": 50, "steps": [10, 50],
                                                               "step_seconds": 60}, format="json")
    assert r.status_code == 202
    assert admin_api.delete(f"/api/v1/backends/{b.pk}/").status_code == 409
