"""Replay in the dashboard: an operator drains a backend, opens a replay of the window, scrubs to
before and after the drain and sees the backend's state change on the map and in the PoP panel,
with the drain's change marked in the replayed timeline; nobody can act meanwhile; back to live."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from steering.models import Backend, PoP
from tests.browser.conftest import artifacts_dir, login, password_of, seed_demo
from tests.browser.playwright_expect import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def scrub_to(page: Any, ms: float) -> None:
    """Move the scrubber as a drag does (Playwright cannot fill a range input)."""
    page.locator("[data-testid=replay-scrubber]").evaluate(
        "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input', { bubbles: true })); }", ms)


def test_a_replay_shows_the_map_before_and_after_a_drain_with_its_change_in_step(open_page, operator):
    seed_demo()
    pop = PoP.objects.get(slug="sin1")
    backend = Backend.objects.get(pool__pop=pop, pool__slug="api-web", name="api-3")
    page = open_page()
    login(page, operator.username, password_of(operator.username))

    page.keyboard.press("/")
    page.locator("[data-testid=search]").fill("sin1")
    page.get_by_role("option").filter(has_text=re.compile(r"^\s*pop\b.*\bsin1\b", re.I)).first.click()
    row = page.locator(f'[data-testid=backend-row][data-backend="{backend.pk}"]')
    donut = page.locator(f'[data-testid=donut][data-pop-id="{pop.pk}"]')
    expect(row).to_have_attribute("data-admin-state", "ready")
    expect(donut).not_to_have_attribute("data-slices", re.compile("draining"))
    # Scrub positions a few seconds apart: the scrubber moves by whole seconds.
    time.sleep(2.5)
    before_drain = time.time() * 1000
    time.sleep(2.5)

    reason = "browser test: replay me"
    row.locator("[data-testid=action-drain]").click()
    dialog = page.locator("[data-testid=action-dialog]")
    dialog.locator("[data-testid=reason]").fill(reason)
    dialog.locator("[data-testid=grace]").fill("600")
    expect(dialog.locator("[data-testid=whatif]")).to_be_visible()
    dialog.locator("[data-testid=confirm]").click()
    expect(dialog).to_be_hidden()
    expect(row).to_have_attribute("data-admin-state", "draining")
    time.sleep(2.5)
    after_drain = time.time() * 1000
    time.sleep(1.5)

    page.locator("[data-testid=replay-open]").click()
    banner = page.locator("[data-testid=replay-banner]")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text(re.compile(r"REPLAY \d\d:\d\d:\d\d"))
    expect(page.locator("[data-testid=live-status]")).to_have_attribute("data-state", "replay")
    expect(page.locator("[data-testid=map-wrap]")).to_have_attribute("data-replay", "true")
    # Nobody acts from a picture of the past.
    expect(page.locator("[data-testid^='action-'], [data-testid*='-action-']")).to_have_count(0)
    drain_event = page.locator("[data-testid=replay-event]", has_text=reason)
    expect(drain_event).to_have_count(1)

    scrub_to(page, before_drain)
    expect(banner).to_have_attribute("data-picture", re.compile(r"\d"))
    expect(row).to_have_attribute("data-admin-state", "ready")
    expect(donut).not_to_have_attribute("data-slices", re.compile("draining"))
    expect(drain_event).to_have_attribute("data-passed", "false")

    scrub_to(page, after_drain)
    expect(row).to_have_attribute("data-admin-state", "draining")
    expect(donut).to_have_attribute("data-slices", re.compile(r"\bdraining:1\b"))
    expect(drain_event).to_have_attribute("data-passed", "true")
    page.screenshot(path=str(artifacts_dir() / "replay-after-drain.png"))

    scrub_to(page, before_drain)
    expect(row).to_have_attribute("data-admin-state", "ready")

    # Playing at 60x from there passes the drain by itself.
    page.locator("[data-testid=replay-speed]").select_option("60")
    page.locator("[data-testid=replay-play]").click()
    expect(drain_event).to_have_attribute("data-passed", "true")
    expect(row).to_have_attribute("data-admin-state", "draining")

    page.locator("[data-testid=replay-exit]").click()
    expect(banner).to_have_count(0)
    expect(page.locator("[data-testid=live-status]")).to_have_attribute("data-state", "live")
    expect(row).to_have_attribute("data-admin-state", "draining")
    expect(row.locator("[data-testid=action-undrain]")).to_be_visible()
