"""Rules around backends: names resolved as configured and every address checked, no delete
under a running operation."""

from __future__ import annotations

import asyncio
import socket

from steering import hosts as hosts_module
from steering import resolve
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
    monkeypatch.setattr(resolve, "MODE", "hosts")
    r = admin_api.post("/api/v1/backends/", {"pool": pool.pk, "name": "app-8", "address": "app-8.example.net", "port": 8080},
                       format="json")
    assert r.status_code == 400
    assert "never asked of DNS" in r.json()["errors"]["address"][0]


def fake_resolver(answers: dict[str, list[list[str]]]):  # type: ignore[no-untyped-def]
    """getaddrinfo as the system resolver would answer it, one answer per call (a name may move).
    Nothing leaves this machine: no resolver is asked in a test."""
    def getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in answers or not answers[host]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        addresses = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 0))
                for a in addresses]
    return getaddrinfo


def test_with_the_system_resolver_every_address_a_name_gives_must_be_allowed(admin_api, monkeypatch):
    monkeypatch.setattr(resolve, "MODE", "system")
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({
        "app-1.fleet.example": [["127.0.0.21"]],
        "app-2.fleet.example": [["127.0.0.22", "203.0.113.5"]],  # documentation address: data only
    }))
    pool = f.pool()
    ok = admin_api.post("/api/v1/backends/", {"pool": pool.pk, "name": "app-1", "address": "app-1.fleet.example",
                                             "port": 8080}, format="json")
    assert ok.status_code == 201, ok.content
    refused = admin_api.post("/api/v1/backends/", {"pool": pool.pk, "name": "app-2", "address": "app-2.fleet.example",
                                                  "port": 8080}, format="json")
    assert refused.status_code == 400
    assert "app-2.fleet.example resolves to 203.0.113.5" in refused.json()["errors"]["address"][0]
    unknown = admin_api.post("/api/v1/backends/", {"pool": pool.pk, "name": "app-3", "address": "nope.fleet.example",
                                                  "port": 8080}, format="json")
    assert unknown.status_code == 400 and "does not resolve" in unknown.json()["errors"]["address"][0]


def test_a_production_address_is_refused_only_by_the_allowlist_setting(admin_api, settings):
    pool = f.pool()
    # A documentation address as data: nothing here probes or connects to it.
    body = {"pool": pool.pk, "name": "app-9", "address": "198.51.100.9", "port": 8080}
    assert admin_api.post("/api/v1/backends/", body, format="json").status_code == 400
    settings.STEERING_PROBE_ALLOWLIST = ["198.51.100.0/24"]
    assert admin_api.post("/api/v1/backends/", body, format="json").status_code == 201


def test_the_probe_connects_to_the_address_it_checked_even_if_the_name_moves(monkeypatch):
    import ipaddress

    from steering.health.checks import resolve_allowed

    monkeypatch.setattr(resolve, "MODE", "system")
    # First answer allowed, a second lookup would say 203.0.113.1: only one lookup happens, and its
    # answer is what the probe uses.
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({"moving.example": [["127.0.0.44"], ["203.0.113.1"]]}))
    nets = [ipaddress.ip_network("127.0.0.0/8")]
    assert asyncio.run(resolve_allowed("moving.example", 80, nets)) == ("127.0.0.44", "")
    ip, why = asyncio.run(resolve_allowed("moving.example", 80, nets))
    assert ip is None and "moving.example resolves to 203.0.113.1, outside the probe allowlist" == why


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
