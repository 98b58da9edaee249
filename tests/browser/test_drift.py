"""The dashboard's drift view: once a fleet file is applied, an object changed by hand shows as a
difference from the file, with who changed it, when and why."""

from __future__ import annotations

import pytest

from tests.browser.conftest import login, password_of, seed_demo
from tests.browser.playwright_expect import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_weight_changed_by_hand_shows_as_drift_with_who_changed_it(open_page, operator):
    from steering.models import Backend
    from steering.services import fleet
    from steering.services.context import Actor
    from steering.services.weights import do_set_weight

    seed_demo()
    document, _fingerprint = fleet.export_document()
    fleet.do_apply(fleet.parse_file(document), actor=Actor.system("pipeline"), reason="fleet.yaml as reviewed")
    backend = Backend.objects.get(pool__pop__slug="fra1", pool__slug="api-web", name="api-2")
    do_set_weight(backend, actor=Actor(name="otto-operator", source="ui"), reason="canary by hand",
                  weight=backend.weight // 2)

    page = open_page()
    login(page, operator.username, password_of(operator.username))
    drift = page.locator("[data-testid=drift]")
    drift.locator("summary").click()
    expect(drift).to_have_attribute("data-state", "drifted")
    row = drift.locator('[data-testid=drift-row][data-key="fra1/api-web/api-2"]')
    expect(row).to_contain_text("weight: file")
    expect(row).to_contain_text("by otto-operator")
    expect(row).to_contain_text("canary by hand")
