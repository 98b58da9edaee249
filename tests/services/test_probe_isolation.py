"""A bad monitor or backend fails only its own probes.

A monitor path is percent-encoded (RFC 3986) on the request line, so a non-ASCII path is
probed like any other; what cannot be encoded is refused when written (400 naming `path`); and
a target whose request cannot even be built (a Host header written past validation) fails its
own probe with the reason as evidence. One wave over 1,000 healthy backends (one uvloop server
process listening for all of them, bench/backend_server.py) beside such poisoned targets leaves
no healthy backend without a fresh result.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from steering.health import store
from steering.health.checks import request_target
from steering.models import Backend, Monitor
from steering.redisconn import sync_client
from steering.tasks import probes
from tests import factories as f
from tests.processes import ROOT
from tests.services.health_support import backends, clean_probe_redis
from tests.support import free_port

HEALTHY = 1000


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    clean_probe_redis()
    yield
    clean_probe_redis()


def monitor_body(path: str) -> dict[str, Any]:
    return {"slug": "statuspage", "kind": "http", "path": path, "interval_seconds": 2.0, "timeout_seconds": 1.0}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/status page", "/a\r\nX-Injected: 1", "/tab\there", "/nul\x00", "/del\x7f",
                                  "/line\u2028sep", "/bom\ufeff", "/frag#ment", "/100%", "/%zz", "healthz", ""])
def test_a_path_that_cannot_go_on_a_request_line_is_refused_naming_the_field(path: str, admin_api: APIClient) -> None:
    response = admin_api.post("/api/v1/monitors/", monitor_body(path), format="json")
    assert response.status_code == 400, response.content
    assert "path" in response.json()["errors"]
    assert not Monitor.objects.exists()
    mon = f.monitor(path="/healthz")
    response = admin_api.patch(f"/api/v1/monitors/{mon.pk}/", {"path": path}, format="json")
    assert response.status_code == 400 and "path" in response.json()["errors"]
    assert Monitor.objects.get(pk=mon.pk).path == "/healthz"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/статус", "/health?verbose=1&fmt=json", "/a%2Fb", "/~ops/ready;v=2", "/[v1]"])
def test_a_path_that_can_be_encoded_is_accepted(path: str, admin_api: APIClient) -> None:
    response = admin_api.post("/api/v1/monitors/", monitor_body(path), format="json")
    assert response.status_code == 201, response.content
    assert Monitor.objects.get().path == path  # stored as written; encoded when the request is built


def test_paths_are_percent_encoded_per_rfc_3986() -> None:
    assert request_target("/статус") == "/%D1%81%D1%82%D0%B0%D1%82%D1%83%D1%81"
    assert request_target("/a b?q=ä&x=[1]") == "/a%20b?q=%C3%A4&x=%5B1%5D"
    assert request_target("/a%2Fb;v=1:@!$&'()*+,=~-._") == "/a%2Fb;v=1:@!$&'()*+,=~-._"  # already legal: kept
    assert request_target("/100%") == "/100%25" and request_target("/x\r\n") == "/x%0D%0A"


class ManyBackends:
    """bench/backend_server.py: `count` listeners on 127.10.x.y:port in one uvloop process."""

    def __init__(self, count: int) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "backend_server.py"), "--count", str(count),
                                      "--port", str(self.port), "--max-seconds", "300"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert "ready" in json.loads(self.proc.stdout.readline())

    @staticmethod
    def address(i: int) -> str:
        return f"127.10.{i // 250}.{i % 250 + 1}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def poisoned(host_header: str = "", **monitor: Any) -> Backend:
    """A backend whose monitor was written past the API's validation (an old row, a direct edit)."""
    mon = f.monitor(interval_seconds=10.0, timeout_seconds=5.0, rise=1, fall=1, **monitor)
    Monitor.objects.filter(pk=mon.pk).update(host_header=host_header)
    return f.backend(f.pool(monitor=mon), address="127.0.0.1", port=free_port())


@pytest.mark.django_db
def test_poisoned_monitors_fail_only_their_own_probes_beside_1000_healthy_backends(monkeypatch) -> None:
    monkeypatch.setattr(probes, "schedule_recorder", lambda: None)  # transitions stay in the outbox
    r = sync_client()
    server = ManyBackends(HEALTHY)
    try:
        with backends(1) as (unicode_server,):
            healthy_monitor = f.monitor(interval_seconds=10.0, timeout_seconds=5.0, rise=1, fall=1)
            pool = f.pool(monitor=healthy_monitor)
            Backend.objects.bulk_create([Backend(pool=pool, name=f"b{i}", address=ManyBackends.address(i),
                                                 port=server.port) for i in range(HEALTHY)])
            healthy = list(Backend.objects.filter(pool=pool).values_list("pk", flat=True))
            bad_host = poisoned(host_header="bad\r\nX-Injected: 1")             # fast path: raw socket
            bad_tls_host = poisoned(kind="https", host_header="例え.example")     # general path: asyncio + TLS
            unicode_mon = f.monitor(path="/статус", interval_seconds=10.0, timeout_seconds=5.0, rise=1, fall=1)
            unicode_path = f.backend(f.pool(monitor=unicode_mon), address="127.0.0.1", port=unicode_server.port)
            probes.sync(r, force=True)

            wave_start = time.time()
            items = [[bid, wave_start] for bid in [bad_host.pk, bad_tls_host.pk, unicode_path.pk, *healthy]]
            ran: list[int] = []
            shard = threading.Thread(target=lambda: ran.append(probes.run_shard(items)), daemon=True)
            shard.start()  # the Celery task's path: uvloop and the sink thread
            shard.join(120)
            assert not shard.is_alive(), "the shard never finished: a bad target stalled it"
            requests = list(unicode_server.requests)
    finally:
        server.stop()

    assert ran == [len(items)]
    states = {bid: store.read_state(r, bid) for bid in healthy}
    stale = [bid for bid, (state, _) in states.items() if state.last_time < wave_start]
    assert stale == []                                            # every healthy backend has a fresh result
    assert all(samples[0]["ok"] for _, samples in states.values())
    for bad, why in ((bad_host, "the Host header 'bad\\r\\nX-Injected: 1' cannot be sent"),
                     (bad_tls_host, "the Host header '例え.example' cannot be sent")):
        state, samples = store.read_state(r, bad.pk)
        assert state.health == "down" and samples[0]["result"] == "error"
        assert why in samples[0]["detail"] and "could not run: ValueError" in samples[0]["detail"]
    assert store.read_state(r, unicode_path.pk)[0].health == "up"
    assert requests[0].startswith(b"GET /%D1%81%D1%82%D0%B0%D1%82%D1%83%D1%81 HTTP/1.1\r\n")
