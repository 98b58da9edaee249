"""Each check against real loopback sockets: what passes, what fails, and why."""

from __future__ import annotations

import asyncio
import ipaddress
import time

from steering.health.checks import probe
from steering.health.target import ProbeResult, ProbeTarget
from tests.services.health_support import Backend, backends, free_port, self_signed_server_context

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


def run(target: ProbeTarget) -> ProbeResult:
    return asyncio.run(probe(target, LOOPBACK, due=time.time()))


def http(port: int, **kw) -> ProbeTarget:
    return ProbeTarget(**{"backend_id": 1, "pool_id": 1, "kind": "http", "address": "127.0.0.1", "port": port,
                          "path": "/healthz", "timeout": 1.0, **kw})


def test_it_passes_a_healthy_http_backend_and_sends_path_and_host():
    with backends(1) as (b,):
        res = run(http(b.port, host_header="api.example.net"))
    assert res.ok and res.result == "ok" and res.status == 200 and res.latency_ms > 0
    head = b.requests[0].decode()
    assert head.startswith("GET /healthz HTTP/1.1\r\n")
    assert "Host: api.example.net\r\n" in head and "Connection: close" in head


def test_a_wrong_status_fails_and_says_which():
    with backends(1) as (b,):
        b.mode = "503"
        res = run(http(b.port))
    assert not res.ok and res.result == "status" and res.status == 503 and "expected 200-399" in res.error


def test_status_ranges_are_honoured():
    with backends(1) as (b,):
        b.mode = "404"
        assert run(http(b.port, expected_status=((200, 399), (404, 404)))).ok
        assert not run(http(b.port, expected_status=((200, 200),))).ok


def test_a_body_mismatch_fails_and_a_match_passes():
    with backends(1) as (b,):
        assert run(http(b.port, body_match="healthy")).ok
        b.mode = "body"
        res = run(http(b.port, body_match="healthy"))
    assert not res.ok and res.result == "body" and res.status == 200


def test_a_body_match_split_across_chunks_still_matches():
    with backends() as (b,):
        b.mode = "chunked"
        assert run(http(b.port, body_match="healthy")).ok
        res = run(http(b.port, body_match="degraded"))
    assert not res.ok and res.result == "body"


def test_chunked_bodies_are_decoded_only_when_the_response_says_so():
    from steering.health.httpbody import contains, dechunk

    chunked = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    assert dechunk(chunked) == b"hello world"
    assert dechunk(b"5\r\nhel") == b"hel"  # truncated (at the read limit): what arrived still counts
    assert contains(b"lo wo", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", chunked)
    assert not contains(b"lo wo", b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n", chunked)


def test_head_sends_head_and_skips_the_body_match():
    with backends(1) as (b,):
        res = run(http(b.port, method="HEAD", body_match="not there"))
    assert res.ok and b.requests[0].startswith(b"HEAD /healthz ")


def test_a_backend_that_accepts_and_never_answers_times_out_on_its_own_timeout():
    with backends(1) as (b,):
        b.mode = "hang"
        res = run(http(b.port, timeout=0.3))
    assert not res.ok and res.result == "timeout"
    # The probe gave up at its own timeout (its recorded latency), not earlier.
    assert res.latency_ms >= 300


def test_a_refused_connection_fails_at_once():
    res = run(http(free_port()))
    assert not res.ok and res.result == "refused"
    tcp = run(ProbeTarget(backend_id=1, pool_id=1, kind="tcp", address="127.0.0.1", port=free_port()))
    assert not tcp.ok and tcp.result == "refused"


def test_tcp_connect_passes_when_something_listens():
    with backends(1) as (b,):
        assert run(ProbeTarget(backend_id=1, pool_id=1, kind="tcp", address="127.0.0.1", port=b.port)).ok


def test_a_self_signed_https_backend_fails_with_verification_and_passes_without():
    with self_signed_server_context() as ctx:
        b = Backend(tls=ctx).start()
        try:
            strict = run(http(b.port, kind="https", host_header="localhost", tls_verify=True))
            relaxed = run(http(b.port, kind="https", host_header="localhost", tls_verify=False))
            b.mode = "chunked"  # the https path reads through asyncio's TLS transport: same chunk rule
            chunked = run(http(b.port, kind="https", host_header="localhost", tls_verify=False, body_match="healthy"))
        finally:
            b.shutdown()
    assert not strict.ok and strict.result == "tls" and "certificate" in strict.error.lower()
    assert relaxed.ok and relaxed.status == 200
    assert chunked.ok, chunked
    assert "localhost" in b.sni  # SNI carries the Host header's name


def test_it_refuses_to_probe_outside_the_allowlist_without_connecting():
    res = run(http(80, address="192.0.2.10"))
    assert not res.ok and res.result == "allowlist" and "outside the probe allowlist" in res.error
    named = asyncio.run(probe(http(80, address="localhost"), [ipaddress.ip_network("192.0.2.0/24")], due=time.time()))
    assert named.result == "allowlist"
    unknown = asyncio.run(probe(http(80, address="no-such-name.invalid"), LOOPBACK, due=time.time()))
    assert unknown.result == "allowlist" and "never asked of DNS" in unknown.error


def test_many_probes_run_concurrently_and_a_hung_backend_costs_only_its_timeout():
    with backends(4) as servers:
        servers[0].mode = "hang"

        async def all_of_them() -> list[ProbeResult]:
            return await asyncio.gather(*(probe(http(s.port, timeout=0.5), LOOPBACK, due=time.time())
                                          for s in servers * 25))

        results = asyncio.run(all_of_them())
    assert sum(r.ok for r in results) == 75 and sum(r.result == "timeout" for r in results) == 25
    # No healthy probe waited behind the hung backend: each one's own latency stays under the
    # timeout the hung ones ran into (they ran side by side, not queued).
    assert max(r.latency_ms for r in results if r.ok) < 500
