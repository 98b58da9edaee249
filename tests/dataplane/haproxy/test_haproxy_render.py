"""haproxy.cfg rendering: `haproxy -c` accepts the demo topology and the edge cases; plan() logic."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from steering.dataplane.haproxy.apply import MemoryAppliedStore, Want, plan
from steering.dataplane.haproxy.desired import pop_spec
from steering.dataplane.haproxy.model import DRAIN, MAINT, READY, PoolSpec, PopSpec, ServerSpec, ServiceSpec
from steering.dataplane.haproxy.render import observe_words, render
from steering.dataplane.haproxy.runtime import ServerStat, ServerState
from steering.models import PoP
from tests import factories as f
from tests.dataplane.haproxy.lab import haproxy_binary


def haproxy_check(text: str, tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    proc = subprocess.run([haproxy_binary(), "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"haproxy -c refused the config:\n{proc.stdout}{proc.stderr}\n---\n{text}"
    assert "[ALERT]" not in proc.stdout + proc.stderr


def binds(spec: PopSpec, base: int = 20000) -> dict[str, tuple[str, int]]:
    return {s.slug: ("127.0.0.1", base + i) for i, s in enumerate(spec.services)}


def test_every_demo_pop_renders_a_config_haproxy_accepts(db: Any, tmp_path: Path) -> None:
    call_command("seed_demo")
    pops = list(PoP.objects.all())
    assert len(pops) == 7
    for pop in pops:
        spec = pop_spec(pop)
        rendered = render(spec, socket_path=str(tmp_path / f"{pop.slug}.sock"), binds=binds(spec))
        haproxy_check(rendered.text, tmp_path)
        text = rendered.text
        assert "level admin" in text and "expose-fd listeners" in text
        assert "0.0.0.0" not in text
        # /payments goes to the PCI pool, evaluated before the default pool
        pci = next(p for p in spec.pools if p.slug == "pay-pci")
        web = next(p for p in spec.pools if p.slug == "api-web")
        assert f"use_backend {pci.proxy} if r{pci.id}_path" in text
        assert f"default_backend {web.proxy}" in text
        # We probe ourselves: HAProxy's check only serves `observe` (it never takes a server out on
        # its own, fall 1000) and brings back one that its live traffic took out.
        assert "option httpchk" not in text and " fall 1000" in text
        assert "retries 3" in text and "option redispatch 1" in text and "observe layer4" in text
        assert rendered.warnings == ()


def test_edge_cases_render_valid_configs(db: Any, tmp_path: Path) -> None:
    pop = f.pop()
    api = f.service(protocol="http")
    tcp = f.service(protocol="tcp")
    backup = f.pool(pop, api, slug="spare", match_host="spare.example.net", rule_priority=300)
    main = f.pool(pop, api, slug="web", algorithm="source", backup_pool=backup)
    f.pool(pop, api, slug="empty", match_path_prefix="/empty/", rule_priority=50, algorithm="first")
    l4 = f.pool(pop, tcp, slug="l4", mode="l4", algorithm="random")
    f.backend(main, name="ready-1", weight=3)
    f.backend(main, name="drain-1", admin_state="draining", drain_deadline=timezone.now() + datetime.timedelta(minutes=1))
    f.backend(main, name="drained-1", admin_state="drained")
    f.backend(main, name="maint-1", admin_state="maint")
    f.backend(main, name="down-1", health="down")
    f.backend(main, name="zero-1", weight=0)
    f.backend(main, name="backup-1", backup=True)
    f.backend(main, name="v6-1", address="::1")
    f.backend(main, name="host-1", address="localhost")
    f.backend(main, name="slow-1", slow_start_seconds=60, ready_since=timezone.now())
    f.backend(l4, name="tcp-1", port=9000)
    spec = pop_spec(pop)
    rendered = render(spec, socket_path=str(tmp_path / "x.sock"), binds=binds(spec))
    haproxy_check(rendered.text, tmp_path)
    text = rendered.text
    web = next(p for p in spec.pools if p.slug == "web")
    spare = next(p for p in spec.pools if p.slug == "spare")
    assert f"use_backend {spare.proxy} if {{ nbsrv({web.proxy}) eq 0 }}" in text
    assert "hash-type consistent" in text  # source hashing that accepts runtime-added servers
    lines = {line.split()[1]: line.split(" check ")[0] for line in text.splitlines() if line.strip().startswith("server ")}
    assert lines["ready-1"].endswith("weight 3")
    assert lines["drain-1"].endswith("weight 0")
    assert "disabled" in lines["drained-1"] and "disabled" in lines["maint-1"]
    assert lines["down-1"].endswith("weight 0")
    assert lines["zero-1"].endswith("weight 0")
    assert "backup" in lines["backup-1"]
    assert "[::1]:8080" in lines["v6-1"]
    assert " weight 1" in lines["slow-1"] or " weight 2" in lines["slow-1"]  # slow start just began
    assert "mode tcp" in text and "balance random" in text and "balance first" in text


def test_a_tcp_frontend_cannot_route_by_path_and_says_so(db: Any, tmp_path: Path) -> None:
    pop = f.pop()
    svc = f.service(protocol="http")
    f.pool(pop, svc, slug="l4", mode="l4")
    f.pool(pop, svc, slug="pci", match_path_prefix="/payments", rule_priority=1)
    spec = pop_spec(pop)
    rendered = render(spec, socket_path=str(tmp_path / "x.sock"), binds=binds(spec))
    haproxy_check(rendered.text, tmp_path)
    assert any("match rules not applied" in w for w in rendered.warnings)


def test_frontends_bind_the_address_the_model_gives_and_refuse_only_a_malformed_one() -> None:
    # The product binds a fleet's VIPs (here a documentation address, as data: nothing is started).
    spec = PopSpec("p", (ServiceSpec("api", "http"),), (PoolSpec(1, "web", "api", "http", "roundrobin"),))
    rendered = render(spec, socket_path="/tmp/x.sock", binds={"api": ("192.0.2.1", 443), })
    assert "bind 192.0.2.1:443" in rendered.text
    assert "bind [2001:db8::1]:443" in render(spec, socket_path="/tmp/x.sock",
                                              binds={"api": ("2001:db8::1", 443)}).text
    with pytest.raises(ValueError, match="not an IP address"):
        render(spec, socket_path="/tmp/x.sock", binds={"api": ("vip.example", 80)})


def _state(name: str, state: int = 0, weight: int = 100) -> ServerState:
    return ServerState("pool-1-web", name, "127.0.0.1", 8080, 2, state, weight, weight)


def test_plan_makes_the_minimal_steps_and_tells_drift_from_pending() -> None:
    servers = (
        ServerSpec("a", "127.0.0.1", 8080, 100, READY),
        ServerSpec("b", "127.0.0.1", 8080, 0, DRAIN),
        ServerSpec("c", "127.0.0.1", 8080, 0, MAINT),
        ServerSpec("d", "127.0.0.1", 8080, 50, READY),
        ServerSpec("new", "127.0.0.1", 8080, 10, READY),
    )
    spec = PopSpec("p", (ServiceSpec("api", "http"),), (PoolSpec(1, "web", "api", "http", "roundrobin", servers=servers),))
    states = {f"pool-1-web/{s.name}": s for s in [
        _state("a"),                  # in sync
        _state("b", weight=0),        # weight 0 satisfies drain (a config-rendered drain)
        _state("c", state=0x01),      # maint
        _state("d", state=0x01),      # someone put it in maint by hand: drift
        _state("gone", weight=5),     # not wanted any more, no sessions
    ]}
    stats = {"pool-1-web/gone": ServerStat("pool-1-web", "gone", 0, 9, 0, 0, "UP", 5)}
    store = MemoryAppliedStore()
    store.put("p", {"pool-1-web/a": Want(READY, 100), "pool-1-web/d": Want(READY, 50),
                    "pool-1-web/gone": Want(READY, 5)})
    p = plan(spec, {"pool-1-web"}, states, stats, store.get("p"))
    lines = [s.line() for s in p.steps]
    assert lines == [  # servers coming up first, then the ones going down
        "weight pool-1-web/d 50", "state pool-1-web/d ready",
        f"add pool-1-web/new 127.0.0.1:8080 weight 10 {observe_words(spec.pools[0])}", "state pool-1-web/new ready",
        "state pool-1-web/gone maint", "delete pool-1-web/gone",
    ]
    drift = {d.server for d in p.differences if d.drift}
    assert drift == {"d"}  # new was never applied (pending), gone still showed what we applied
    # A removed server with open sessions is drained first and deleted on a later pass.
    stats["pool-1-web/gone"] = ServerStat("pool-1-web", "gone", 2, 9, 0, 0, "UP", 5)
    p = plan(spec, {"pool-1-web"}, states, stats, store.get("p"))
    assert "state pool-1-web/gone drain" in [s.line() for s in p.steps]
    assert "delete pool-1-web/gone" not in [s.line() for s in p.steps]
    assert p.waiting == ["pool-1-web/gone: 2 sessions"]
    assert [d.drift for d in p.differences if d.server == "gone"] == [False]
    # Next pass: drained by us, sessions still open: nothing to do, and still no drift.
    states["pool-1-web/gone"] = _state("gone", state=0x08, weight=5)
    p = plan(spec, {"pool-1-web"}, states, stats, {**(store.get("p") or {}), "pool-1-web/gone": Want(DRAIN, 0)})
    assert [s.line() for s in p.steps if "gone" in s.line()] == []
    assert [d.drift for d in p.differences if d.server == "gone"] == [False]


def test_rates_come_from_counter_deltas_and_a_restart_gives_none() -> None:
    from steering.dataplane.haproxy.stats import Sample, figures

    fig = figures(Sample(10, 1000, 4, 100.0), Sample(30, 1200, 6, 102.0))
    assert (fig.sessions, fig.session_rate, fig.completion_rate, fig.rate_5xx) == (30, 100.0, 90.0, 1.0)
    # 2,400 sessions finishing at 80/s: the drain estimate reads these figures.
    assert figures(Sample(2400, 0, 0, 0.0), Sample(2400, 80, 0, 1.0)).completion_rate == 80.0
    restarted = figures(Sample(10, 1000, 4, 100.0), Sample(3, 5, 0, 102.0), last_second_rate=7)
    assert (restarted.session_rate, restarted.completion_rate, restarted.rate_5xx) == (7.0, 0.0, 0.0)
    assert figures(None, Sample(3, 5, 0, 1.0), last_second_rate=2).session_rate == 2.0


def test_the_applied_state_survives_the_agents_restart_on_local_disk(tmp_path: Any) -> None:
    import os
    import stat

    from steering.agents.haproxy import FileAppliedStore

    path = tmp_path / "applied.json"
    store = FileAppliedStore(path)
    assert store.get("bom1") is None
    store.put("bom1", {"pool-1-web/a": Want(DRAIN, 0), "pool-1-web/b": Want(READY, 7)})
    assert FileAppliedStore(path).get("bom1") == {"pool-1-web/a": Want(DRAIN, 0), "pool-1-web/b": Want(READY, 7)}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_passive_health_settings_render_per_pool_and_haproxy_accepts_them(tmp_path: Path) -> None:
    from steering.dataplane.haproxy.model import pop_spec_from_dict, pop_spec_to_dict

    servers = (ServerSpec("a", "127.0.0.1", 8080, 10, READY), ServerSpec("b", "127.0.0.1", 8081, 10, MAINT))
    pools = (
        PoolSpec(1, "web", "api", "http", "roundrobin", servers=servers),                        # the defaults
        PoolSpec(2, "pci", "api", "http", "leastconn", match_path_prefix="/payments", rule_priority=1, servers=servers,
                 retries=1, redispatch=False, retry_on="conn-failure 503", observe="off", error_limit=9),
        PoolSpec(3, "l4", "tcp", "tcp", "roundrobin", servers=servers, error_limit=3),
        PoolSpec(4, "none", "other", "http", "roundrobin", servers=servers, retries=0, retry_on=""),
    )
    spec = PopSpec("p", (ServiceSpec("api", "http"), ServiceSpec("tcp", "tcp"), ServiceSpec("other", "http")), pools)
    assert pop_spec_from_dict(pop_spec_to_dict(spec)) == spec  # the settings travel to the agent too
    text = render(spec, socket_path=str(tmp_path / "x.sock"), binds=binds(spec)).text
    haproxy_check(text, tmp_path)
    sections = {block.split("\n", 1)[0]: block for block in text.split("\n\n")}
    web, pci, l4, none = (sections[f"backend {p.proxy}"] for p in pools)
    # Defaults: retry a refused connection elsewhere, replay a request whose server died (idempotent only).
    assert "retries 3" in web and "option redispatch 1" in web
    assert "retry-on conn-failure empty-response response-timeout" in web
    assert "http-request disable-l7-retry unless { method GET HEAD OPTIONS TRACE PUT DELETE }" in web
    assert web.count("check observe layer4 error-limit 5 on-error mark-down") == 2 and " fall 1000" in web
    assert "disabled check observe" in web  # a server in maintenance keeps its words, unused until it is back
    # Per pool: fewer retries on the same server, 503 replayed, no observe.
    assert "retries 1" in pci and "no option redispatch" in pci and "retry-on conn-failure 503" in pci
    assert "observe" not in pci and " check" not in pci
    # TCP: retries and redispatch apply, retry-on is HTTP only.
    assert "retries 3" in l4 and "option redispatch 1" in l4 and "retry-on" not in l4 and "error-limit 3" in l4
    # No retries at all: nothing to redispatch or replay.
    assert "retries 0" in none and "redispatch" not in none and "retry-on" not in none


def test_a_retry_on_word_that_could_break_the_config_is_refused() -> None:
    bad = PoolSpec(1, "web", "api", "http", "roundrobin", retry_on="conn-failure }")
    spec = PopSpec("p", (ServiceSpec("api", "http"),), (bad,))
    with pytest.raises(ValueError, match="retry-on"):
        render(spec, socket_path="/tmp/x.sock", binds={"api": ("127.0.0.1", 20000)})


def test_the_config_says_which_passive_settings_it_runs_and_only_rendered_ones_count(tmp_path: Path) -> None:
    from steering.agents.haproxy import config_signature
    from steering.dataplane.haproxy.render import passive_settings, passive_var

    web = PoolSpec(1, "web", "api", "http", "roundrobin", retries=2, retry_on="conn-failure 503")
    l4 = PoolSpec(3, "l4", "tcp", "tcp", "roundrobin", observe="off")
    spec = PopSpec("p", (ServiceSpec("api", "http"), ServiceSpec("tcp", "tcp")), (web, l4))
    text = render(spec, socket_path=str(tmp_path / "x.sock"), binds=binds(spec)).text
    haproxy_check(text, tmp_path)
    assert (f"set-var {passive_var(1)} str(retries:2/redispatch:1/retry-on:conn-failure+503/observe:layer4/"
            "error-limit:5)") in text
    assert f"set-var {passive_var(3)} str(retries:3/redispatch:1/retry-on:/observe:off/error-limit:)" in text
    # A setting the config does not render asks for no reload: retry-on in TCP, error-limit with observe off,
    # and the bound the agent itself holds HAProxy's observe to.
    from dataclasses import replace

    assert passive_settings(replace(l4, retry_on="503", error_limit=9), "tcp") == passive_settings(l4, "tcp")
    bound_only = replace(spec, pools=(replace(web, max_ejected_percent=50, min_healthy_percent=10), l4))
    assert config_signature(bound_only) == config_signature(spec)
    assert config_signature(replace(spec, pools=(replace(web, retries=1), l4))) != config_signature(spec)


def _row(proxy: str, name: str, status: str, lastchg: int = 0) -> ServerStat:
    return ServerStat(proxy, name, 0, 0, 0, 0, status, 100, lastchg=lastchg)


def test_the_agent_puts_back_what_haproxys_observe_took_out_beyond_the_pool_bound() -> None:
    from dataclasses import replace

    from steering.dataplane.haproxy.observe import beyond_the_bound

    servers = tuple(ServerSpec(f"s{i}", "127.0.0.1", 9000 + i, 100, READY, backend_id=i) for i in range(1, 5))
    pool = PoolSpec(7, "web", "api", "http", "roundrobin", servers=servers)   # 10 %, min healthy 50 %
    spec = PopSpec("p", (ServiceSpec("api", "http"),), (pool,))
    all_down = [_row(pool.proxy, s.name, "DOWN", lastchg=3) for s in servers]
    # Every server down at once (a flap): 10 % of 4 is still one (at least one, as in Envoy). The one
    # seen down first stays out; the others go back, the latest first.
    put = beyond_the_bound(spec, all_down, {3: 10.0, 1: 11.0, 2: 11.0, 4: 11.0})
    assert sorted(p.server for p in put) == ["s1", "s2", "s4"]
    assert "at most 10% of the pool may be ejected at once (1 of 4)" in put[0].why
    assert "HAProxy's observe had 4 of the 4 backends of pool web out" in put[0].why
    # Seen in the same pass: the longer down (HAProxy's lastchg) stays, then the lower id.
    rows = [_row(pool.proxy, "s1", "DOWN", 1), _row(pool.proxy, "s2", "DOWN 1/2", 5), _row(pool.proxy, "s3", "UP"),
            _row(pool.proxy, "s4", "DOWN", 1)]
    assert sorted(p.server for p in beyond_the_bound(spec, rows, {})) == ["s1", "s4"]
    # One already ejected by the control plane counts against the share: every observe-DOWN goes back.
    ejected = replace(pool, servers=(replace(servers[0], weight=0, ejected=True), *servers[1:]))
    put = beyond_the_bound(replace(spec, pools=(ejected,)), all_down, {})
    assert sorted(p.server for p in put) == ["s2", "s3", "s4"]
    # A larger share stops at the minimum healthy capacity (declared capacities count, as for ejection).
    wide = replace(pool, max_ejected_percent=100, min_healthy_percent=60,
                   servers=tuple(replace(s, capacity=100.0 * s.backend_id) for s in servers))  # 1000 req/s in all
    kept = {s.name for s in servers} - {p.server for p in beyond_the_bound(replace(spec, pools=(wide,)), all_down, {})}
    assert kept == {"s1", "s2"}  # 300 of 1000 req/s out, 700 serving; s3 would leave 400, below 600
    # Out for our own reasons (drained, weight 0, a backup): left alone; the last one serving goes back.
    others = replace(pool, servers=(replace(servers[0], state=DRAIN), replace(servers[1], weight=0),
                                    replace(servers[2], backup=True), servers[3]))
    put = beyond_the_bound(replace(spec, pools=(others,)), all_down, {})
    assert [p.server for p in put] == ["s4"] and "below the pool's minimum healthy 50%" in put[0].why
    assert beyond_the_bound(spec, [_row(pool.proxy, s.name, "UP") for s in servers], {}) == []
    # 0 % only watches: HAProxy's observe may keep nobody out either.
    watching = replace(pool, max_ejected_percent=0)
    assert len(beyond_the_bound(replace(spec, pools=(watching,)), all_down, {})) == 4
