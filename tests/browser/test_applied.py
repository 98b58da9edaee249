"""Desired vs applied in the PoP panel, per layer: the version each data plane runs, how far
behind, the data plane's own error, and when its agent was last seen (GET /api/v1/dataplanes/)."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import login, password_of, seed_demo
from tests.browser.playwright_expect import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_pop_panel_shows_each_layers_applied_version_lag_error_and_last_seen(open_page, operator, orm):
    from steering.models import PoP
    from steering.readmodels.version import current_version
    from steering.services.agents import AgentIdentity, acknowledge, record_seen

    seed_demo()
    fra = PoP.objects.get(slug="fra1")
    version = current_version()

    def agent(layer: str, pop: PoP | None) -> AgentIdentity:
        identity = AgentIdentity(layer, pop, "host-a", token_name=f"{layer}-agent")
        record_seen(identity)
        return identity

    acknowledge(agent("local", fra), version=version, etag="e")                   # in sync
    acknowledge(agent("anycast", fra), version=version, etag="e",
                error="exabgp: announce refused: peer 127.0.0.1 not established")  # refused, in its words
    acknowledge(agent("dns", None), version=version - 1, etag="e")               # one behind: applying
    page = open_page()
    login(page, operator.username, password_of(operator.username))
    page.keyboard.press("/")
    page.locator("[data-testid=search]").fill("fra1")
    page.get_by_role("option").filter(has_text=re.compile(r"^\s*pop\b.*\bfra1\b", re.I)).first.click()
    panel = page.locator('[data-testid=pop-panel][data-pop="fra1"]')
    local = panel.locator('[data-testid=applied][data-layer="local"]')
    expect(local).to_have_attribute("data-state", "in_sync")
    expect(local).to_contain_text(f"runs v{version}")
    expect(local).to_contain_text("agent last seen")
    anycast = panel.locator('[data-testid=applied][data-layer="anycast"]')
    expect(anycast).to_have_attribute("data-state", "refused")
    expect(anycast).to_contain_text("announce refused: peer 127.0.0.1 not established")
    dns = panel.locator('[data-testid=applied][data-layer="dns"]')
    expect(dns).to_contain_text(f"runs v{version - 1}, wants v")
    expect(dns).to_have_attribute("data-state", re.compile("applying|behind"))
    expect(page.locator("[data-testid=applied-summary]")).to_be_visible()
