"""The dashboard in a real Chromium against the real stack (uvicorn, Celery worker + beat, probes).

Selectors are the DOM hooks of the dashboard contract (data-testid ...). Every wait is a
Playwright `expect` that polls with a generous timeout; nothing asserts on elapsed time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import Any

import pytest

from steering.demo import topology as demo
from steering.models import Backend, Change, PoP
from tests import factories as f
from tests.browser.conftest import assert_not_reloaded, free_port, login, password_of, seed_demo
from tests.browser.playwright_expect import expect
from tests.processes import stop_process_group

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LAYERS = ("dns", "anycast", "local")
ACTIONS = ("action-drain", "action-undrain", "action-maintenance", "action-weight", "action-withdraw", "action-announce")
# Reaching a verdict takes probes (rise/fall intervals) and a worker that may start cold.
PROBE_TIMEOUT_MS = 90_000


def marker(page: Any, slug: str) -> Any:
    return page.locator(f'[data-testid=pop-marker][data-pop="{slug}"]')


def pop_panel(page: Any, slug: str) -> Any:
    return page.locator(f'[data-testid=pop-panel][data-pop="{slug}"]')


def open_pop(page: Any, slug: str) -> Any:
    """Through the search: `/`, the slug, then the hit for the PoP once it shows (its ARIA option).
    Neighbouring markers may overlap on the map (fra1 and lhr1); a search hit never does."""
    page.keyboard.press("/")
    search = page.locator("[data-testid=search]")
    expect(search).to_be_focused()
    search.fill(slug)
    hit = page.get_by_role("option").filter(has_text=re.compile(rf"^\s*pop\b.*\b{re.escape(slug)}\b", re.I)).first
    expect(hit).to_be_visible()
    hit.click()
    panel = pop_panel(page, slug)
    expect(panel).to_be_visible()
    return panel


def row(page: Any, backend_id: int) -> Any:
    return page.locator(f'[data-testid=backend-row][data-backend="{backend_id}"]')


def test_login_shows_the_demo_pops_and_each_layer_toggles(open_page, operator):
    seed_demo()
    page = open_page()
    login(page, operator.username, password_of(operator.username))

    expect(page.locator("[data-testid=map]")).to_be_visible()
    markers = page.locator("[data-testid=pop-marker]")
    expect(markers).to_have_count(len(demo.POPS))
    for slug, *_ in demo.POPS:
        expect(marker(page, slug)).to_be_visible()
        expect(marker(page, slug)).to_have_attribute("data-health", re.compile(r"^(up|degraded|down|stale|unknown)$"))

    for layer in LAYERS:
        toggle = page.locator(f'[data-testid=layer-toggle][data-layer="{layer}"]')
        drawing = page.locator(f'[data-testid=layer][data-layer="{layer}"]')
        expect(toggle).to_have_attribute("aria-pressed", re.compile(r"^(true|false)$"))
        was_on = toggle.get_attribute("aria-pressed") == "true"
        for on in (not was_on, was_on):  # flip, then flip back
            toggle.click()
            expect(toggle).to_have_attribute("aria-pressed", "true" if on else "false")
            if on:
                expect(drawing).to_be_visible()
            else:
                expect(drawing).to_be_hidden()
    # Clicking a marker opens its PoP's panel.
    marker(page, "bom1").click()
    expect(pop_panel(page, "bom1")).to_be_visible()
    expect(page.locator("[data-testid=live-status]")).to_have_attribute("data-state", "live")
    assert_not_reloaded(page)


def test_the_map_and_search_work_from_the_keyboard(open_page, operator):
    seed_demo()
    page = open_page()
    login(page, operator.username, password_of(operator.username))
    expect(marker(page, "sin1")).to_be_visible()
    # A marker takes focus (Tab order) and Enter opens its PoP.
    marker(page, "sin1").focus()
    expect(marker(page, "sin1")).to_be_focused()
    page.keyboard.press("Enter")
    expect(pop_panel(page, "sin1")).to_be_visible()
    # "/" then a name then Enter at once: the first hit opens, even before the list re-renders.
    page.keyboard.press("/")
    expect(page.locator("[data-testid=search]")).to_be_focused()
    page.keyboard.type("maa1")
    page.keyboard.press("Enter")
    expect(pop_panel(page, "maa1")).to_be_visible()


def test_an_operator_drains_a_backend_from_the_ui_and_watches_it_drain(open_page, operator, orm, celery_stack,
                                                                         demo_backends):
    seed_demo()
    pop = PoP.objects.get(slug="fra1")
    backend = Backend.objects.get(pool__pop=pop, pool__slug="api-web", name="api-1")
    demo_backends()
    celery_stack()
    page = open_page()
    login(page, operator.username, password_of(operator.username))

    open_pop(page, "fra1")
    target = row(page, backend.pk)
    expect(target).to_have_attribute("data-admin-state", "ready")
    target.locator("[data-testid=action-drain]").click()
    dialog = page.locator("[data-testid=action-dialog]")
    expect(dialog).to_be_visible()
    reason = "browser test: kernel upgrade on api-1"
    dialog.locator("[data-testid=reason]").fill(reason)
    dialog.locator("[data-testid=grace]").fill("10")
    whatif = dialog.locator("[data-testid=whatif]")
    expect(whatif).to_be_visible()
    expect(whatif).to_have_attribute("data-verdict", re.compile(r"\w"))  # the server's impact, not a placeholder
    dialog.locator("[data-testid=confirm]").click()
    expect(dialog).to_be_hidden()

    # No reload: the live feed moves the row through draining to drained (grace 10 s, then the sweeper).
    expect(target).to_have_attribute("data-admin-state", "draining")
    expect(target).to_have_attribute("data-admin-state", "drained", timeout=PROBE_TIMEOUT_MS)
    operation = page.locator("[data-testid=operation]", has_text="fra1/api-web/api-1")
    expect(operation).to_have_attribute("data-status", "succeeded")
    assert_not_reloaded(page)

    timeline = page.locator("[data-testid=timeline]")
    entry = timeline.locator("[data-testid=timeline-entry]", has_text=reason)
    expect(entry.first).to_be_visible()
    expect(entry.first).to_contain_text(operator.username)

    def audited() -> tuple[str, list[tuple[str, str]]]:
        changes = Change.objects.filter(object_type="backend", object_id=backend.pk, reason=reason)
        return (Backend.objects.get(pk=backend.pk).admin_state,
                list(changes.values_list("actor_name", "action")))

    state, changes = orm(audited)
    assert state == "drained"
    assert changes and all(actor == operator.username for actor, _ in changes)


def test_a_killed_backend_process_turns_down_without_a_reload(open_page, operator, orm, celery_stack, tmp_path):
    address = "127.0.0.2"
    port = free_port(address)
    served = tmp_path / "www"
    served.mkdir()
    (served / "index.html").write_text("ok\n")
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", address, "--directory", str(served),
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        mon = f.monitor(kind="http", path="/", interval_seconds=1.0, timeout_seconds=0.5, rise=1, fall=2)
        pool = f.pool(monitor=mon, panic_threshold_percent=0, expected_rps=10)
        backend = f.backend(pool, address=address, port=port, capacity_rps=1000)
        slug = pool.pop.slug
        stack = celery_stack()
        page = open_page()
        login(page, operator.username, password_of(operator.username))

        expect(marker(page, slug)).to_have_attribute("data-health", "up", timeout=PROBE_TIMEOUT_MS)
        open_pop(page, slug)
        expect(row(page, backend.pk)).to_have_attribute("data-health", "up")

        os.killpg(server.pid, signal.SIGKILL)  # no goodbye: the listener just vanishes
        server.wait(timeout=10)
        try:
            expect(row(page, backend.pk)).to_have_attribute("data-health", "down", timeout=PROBE_TIMEOUT_MS)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.logs()}") from exc
        expect(marker(page, slug)).to_have_attribute("data-health", "down")
        assert_not_reloaded(page)
        assert orm(lambda: Backend.objects.get(pk=backend.pk).health) == "down"
    finally:
        stop_process_group(server)


def test_a_viewer_sees_no_action_buttons_and_the_api_refuses_their_drain(open_page, viewer):
    seed_demo()
    backend = Backend.objects.get(pool__pop__slug="lhr1", pool__slug="api-web", name="api-2")
    page = open_page()
    login(page, viewer.username, password_of(viewer.username))

    panel = open_pop(page, "lhr1")
    expect(row(page, backend.pk)).to_be_visible()
    expect(panel.locator("[data-testid=backend-row]")).to_have_count(
        sum(count for _, _, _, _, count, *_ in demo.POOLS.values()))
    for action in ACTIONS:
        expect(page.locator(f"[data-testid={action}]")).to_have_count(0)
    expect(page.locator("[data-testid^='action-'], [data-testid*='-action-']")).to_have_count(0)  # PoP/pool level too

    # The same browser session, with a valid CSRF token: refused for the role, not for CSRF.
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(f"/api/v1/backends/{backend.pk}/drain/",
                                 data={"reason": "a viewer tries", "grace_seconds": 5},
                                 headers={"X-CSRFToken": csrf, "Referer": page.url})
    assert response.status == 403
    assert "operator" in response.json()["detail"]


def test_an_admin_freezes_changes_and_an_operator_sees_why_their_drain_is_refused(open_page, admin, operator, orm):
    seed_demo()
    backend = Backend.objects.get(pool__pop__slug="fra1", pool__slug="api-web", name="api-2")
    page = open_page()
    login(page, admin.username, password_of(admin.username))
    page.locator("[data-testid=freeze-open]").click()
    page.locator("[data-testid=freeze-reason]").fill("browser test: change freeze")
    page.locator("[data-testid=freeze-submit]").click()
    banner = page.locator("[data-testid=freeze-banner]")
    expect(banner).to_contain_text("browser test: change freeze")
    expect(banner).to_contain_text(admin.username)

    page.locator("form.signout button").click()
    login(page, operator.username, password_of(operator.username))
    expect(banner).to_contain_text("browser test: change freeze")  # everyone sees it, from the first load
    expect(page.locator("[data-testid=freeze-open]")).to_have_count(0)  # only admins switch it
    open_pop(page, "fra1")
    row(page, backend.pk).locator("[data-testid=action-drain]").click()
    dialog = page.locator("[data-testid=action-dialog]")
    dialog.locator("[data-testid=reason]").fill("browser test: drain while frozen")
    expect(dialog.locator("[data-testid=whatif]")).to_have_attribute("data-verdict", "safe")  # previews still answer
    dialog.locator("[data-testid=confirm]").click()
    error = dialog.locator("[data-testid=dialog-error]")
    expect(error).to_contain_text("frozen")
    expect(error).to_contain_text("browser test: change freeze")
    assert orm(lambda: Backend.objects.get(pk=backend.pk).admin_state) == "ready"


def test_the_drain_dialog_names_the_safety_rule_a_drain_would_break_before_and_after_confirming(
        open_page, operator, orm):
    from steering.models import SafetyRule

    seed_demo()
    backend = Backend.objects.get(pool__pop__slug="fra1", pool__slug="api-web", name="api-2")
    SafetyRule.objects.create(slug="keep-fra1-api-whole", kind="max_pool_out_percent", pool=backend.pool,
                              threshold=1)
    page = open_page()
    login(page, operator.username, password_of(operator.username))
    open_pop(page, "fra1")
    row(page, backend.pk).locator("[data-testid=action-drain]").click()
    dialog = page.locator("[data-testid=action-dialog]")
    dialog.locator("[data-testid=reason]").fill("browser test: drain past a rule")
    rules = dialog.locator("[data-testid=safety-rules]")
    expect(rules).to_contain_text("keep-fra1-api-whole")  # in the what-if, before confirming
    dialog.locator("[data-testid=confirm]").click()
    expect(dialog.locator("[data-testid=dialog-error]")).to_contain_text("Refused by a safety rule")
    expect(dialog.locator(".force-box")).to_contain_text("Break the safety rule")
    assert orm(lambda: Backend.objects.get(pk=backend.pk).admin_state) == "ready"


def test_live_status_goes_live_and_a_reconnect_resyncs_what_was_missed(open_page, operator, orm, asgi_server):
    from steering.services.actions import do_drain
    from steering.services.context import Actor

    seed_demo()
    backend = Backend.objects.get(pool__pop__slug="sin1", pool__slug="api-web", name="api-3")
    page = open_page()
    login(page, operator.username, password_of(operator.username))
    status = page.locator("[data-testid=live-status]")
    expect(status).to_have_attribute("data-state", "live")
    open_pop(page, "sin1")
    expect(row(page, backend.pk)).to_have_attribute("data-admin-state", "ready")

    def drain_while_down() -> None:
        # While no server runs, the browser cannot hear this delta: only a resync can show it.
        orm(lambda: do_drain(Backend.objects.get(pk=backend.pk), actor=Actor(name="deployer", source="api"),
                             reason="missed while offline", grace_seconds=600))
        expect(status).not_to_have_attribute("data-state", "live")

    asgi_server.restart(between=drain_while_down)
    expect(status).to_have_attribute("data-state", "live")
    expect(row(page, backend.pk)).to_have_attribute("data-admin-state", "draining")
    assert_not_reloaded(page)


def test_a_delta_the_feed_dropped_is_caught_up_without_refetching_the_topology(open_page, operator, orm,
                                                                              monkeypatch):
    from steering.services import effects
    from steering.services.actions import do_drain
    from steering.services.context import Actor

    seed_demo()
    first = Backend.objects.get(pool__pop__slug="sin1", pool__slug="api-web", name="api-3")
    second = Backend.objects.get(pool__pop__slug="sin1", pool__slug="api-web", name="api-2")
    page = open_page()
    login(page, operator.username, password_of(operator.username))
    expect(page.locator("[data-testid=live-status]")).to_have_attribute("data-state", "live")
    open_pop(page, "sin1")
    expect(row(page, first.pk)).to_have_attribute("data-admin-state", "ready")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/api/v1/" in r.url else None)
    # The channel layer drops the first delta (as a full channel does); the next one arrives after a gap.
    real_send, dropped = effects._sender.send, []

    def drop_the_first(group: str, message: dict[str, Any]) -> None:
        if message.get("type") == "live.delta" and not dropped:
            dropped.append(message["delta"]["version"])
            return
        real_send(group, message)

    monkeypatch.setattr(effects._sender, "send", drop_the_first)
    deployer = Actor(name="deployer", source="api")
    for backend in (first, second):
        orm(lambda b=backend: do_drain(Backend.objects.get(pk=b.pk), actor=deployer, reason="rolling deploy",
                                       grace_seconds=600, force=True, force_reason="test: two at once"))
    expect(row(page, second.pk)).to_have_attribute("data-admin-state", "draining")
    expect(row(page, first.pk)).to_have_attribute("data-admin-state", "draining")   # the one never sent
    assert dropped
    assert [u for u in requests if "/api/v1/live/deltas/" in u] and not [u for u in requests if "/topology/" in u]
    assert_not_reloaded(page)


def test_passive_verdicts_show_on_the_map_and_in_the_pop_panel_beside_active_health(open_page, operator):
    """An ejection by live traffic and a pool whose bounds hold failing backends in, as the outlier
    tick writes them (here straight into the model): the marker's ring and count, the row's badge
    and detail, the PoP's summary, and the pool's outlier-panic note."""
    import datetime

    from django.utils import timezone

    from steering.models import Pool

    seed_demo()
    backend = Backend.objects.get(pool__pop__slug="fra1", pool__slug="api-web", name="api-2")
    now = timezone.now()
    Backend.objects.filter(pk=backend.pk).update(
        health="up", ejected_at=now, ejected_until=now + datetime.timedelta(seconds=600), ejection_count=1,
        ejection_reason="14 × 5xx in 10 s (50% of 28 requests)")
    panic = ("3 more backend(s) fail live traffic (api-1, api-3, api-4) but stay in: at most 10% of the pool may be "
             "ejected at once (1 of 4); the active prober decides for them")
    Pool.objects.filter(pk=backend.pool_id).update(outlier_panic=True, outlier_panic_reason=panic)
    page = open_page()
    login(page, operator.username, password_of(operator.username))

    # On the map: fra1's marker counts one ejected backend and draws its ring.
    expect(marker(page, "fra1")).to_have_attribute("data-ejected", "1")
    expect(marker(page, "fra1").locator("[data-testid=ejected-ring]")).to_have_count(1)
    expect(marker(page, "bom1").locator("[data-testid=ejected-ring]")).to_have_count(0)
    # In the PoP panel, beside active health: the summary, the row's badge (the prober still says up).
    panel = open_pop(page, "fra1")
    expect(panel).to_contain_text("1 ejected by live traffic")
    ejected = row(page, backend.pk)
    expect(ejected).to_have_attribute("data-ejected", "true")
    expect(ejected).to_have_attribute("data-health", "up")
    expect(ejected.locator("[data-state=ejected]")).to_have_attribute(
        "title", re.compile(r"^ejected by live traffic: 14 × 5xx in 10 s \(50% of 28 requests\) · back in \d+ s"))
    # The pool says its bounds hold the others in, and why.
    pool = panel.locator(f'[data-testid=pool][data-pool-id="{backend.pool_id}"]')
    expect(pool.locator("[data-testid=outlier-panic]")).to_contain_text(
        "at most 10% of the pool may be ejected at once (1 of 4)")
    expect(pool.locator("[data-testid=passive-line]")).to_contain_text("1 ejected now")
    expect(panel.locator("[data-testid=outlier-panic]")).to_have_count(1)  # that pool only
    # The backend's detail: what live traffic decided, and who decided it.
    ejected.locator("button.link").first.click()
    detail = page.locator("[data-testid=backend-detail]")
    expect(detail.locator("[data-testid=live-traffic]")).to_contain_text("14 × 5xx in 10 s")
    expect(detail.locator("[data-testid=live-traffic]")).to_contain_text("audited as system:outlier")
    ejected.scroll_into_view_if_needed()  # the screenshot kept for this test shows the row and the note
