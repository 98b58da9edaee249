"""Maintenance windows in the dashboard: the drain dialog proposes an end (72 h by default), the
calendar shows the window, and an operator moves its end with a reason."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import login, password_of, seed_demo
from tests.browser.playwright_expect import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_drain_gets_an_end_the_calendar_shows_it_and_an_operator_moves_it(open_page, operator, orm):
    from steering.models import Backend, Change, Operation

    seed_demo()
    backend = Backend.objects.get(pool__pop__slug="fra1", pool__slug="api-web", name="api-2")
    page = open_page()
    login(page, operator.username, password_of(operator.username))
    page.keyboard.press("/")
    page.locator("[data-testid=search]").fill("fra1")
    page.get_by_role("option").filter(has_text=re.compile(r"^\s*pop\b.*\bfra1\b", re.I)).first.click()
    page.locator(f'[data-testid=backend-row][data-backend="{backend.pk}"] [data-testid=action-maintenance]').click()
    dialog = page.locator("[data-testid=action-dialog]")
    end = dialog.locator("[data-testid=window-end]")
    expect(end).not_to_have_value("")  # the proposed end (STEERING_UI_DRAIN_EXPIRY_HOURS ahead)
    dialog.locator("[data-testid=reason]").fill("browser test: a window that ends")
    dialog.locator("[data-testid=confirm]").click()
    expect(dialog).to_have_count(0)
    op = orm(lambda: Operation.objects.get(kind="maintenance"))
    assert op.expires_at is not None and orm(lambda: Backend.objects.get(pk=backend.pk).admin_state) == "maint"

    row = page.locator(f'[data-testid=window][data-operation="{op.pk}"]')
    expect(row).to_contain_text("maintenance fra1/api-web/api-2")
    row.locator("[data-testid=window-extend]").click()
    row.locator("[data-testid=window-extend-reason]").fill("browser test: needs a day more")
    row.locator("[data-testid=window-extend-submit]").click()
    expect(row.locator("[data-testid=window-extend-reason]")).to_have_count(0)
    change = orm(lambda: Change.objects.get(action="operation.extend", object_id=op.pk))
    assert change.reason == "browser test: needs a day more" and change.actor_name == operator.username


def test_a_layered_drain_is_scheduled_with_its_window_from_the_pop_panel(open_page, operator, orm):
    import datetime

    from steering.models import Operation, PoP

    seed_demo()
    page = open_page()
    login(page, operator.username, password_of(operator.username))
    page.keyboard.press("/")
    page.locator("[data-testid=search]").fill("fra1")
    page.get_by_role("option").filter(has_text=re.compile(r"^\s*pop\b.*\bfra1\b", re.I)).first.click()
    page.locator("[data-testid=pop-action-drain]").click()
    dialog = page.locator("[data-testid=action-dialog]")
    dialog.locator("[data-testid=layered]").check()
    expect(dialog.locator("[data-testid=window-fields]")).to_be_visible()   # a layered drain has a window too
    start = datetime.datetime.now() + datetime.timedelta(hours=2)          # the browser's local time, as typed
    dialog.locator("[data-testid=window-start]").fill(start.strftime("%Y-%m-%dT%H:%M"))
    dialog.locator("[data-testid=reason]").fill("browser test: fibre work tonight")
    dialog.locator("[data-testid=confirm]").click()
    # Judged now like any action: London would pass its capacity, so it takes a forced reason.
    dialog.locator("[data-testid=force]").check()
    dialog.locator("[data-testid=force-reason]").fill("browser test: London is scaled up before the window")
    dialog.locator("[data-testid=confirm]").click()
    expect(dialog).to_have_count(0)
    op = orm(lambda: Operation.objects.get(kind="layered_drain"))
    assert op.status == "scheduled" and op.forced and op.not_before is not None and op.expires_at is not None
    assert op.expires_at > op.not_before
    assert orm(lambda: PoP.objects.get(slug="fra1").admin_state) == "ready"   # nothing moves before its start
    row = page.locator(f'[data-testid=window][data-operation="{op.pk}"]')
    expect(row).to_contain_text("layered drain fra1")
