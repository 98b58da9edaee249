"""The operator guide's pictures (docs/operator-guide.md), taken from the real dashboard, and a clean
browser console on every page a person opens.

Each picture is saved among the test artifacts ($STEERING_ARTIFACTS_DIR, as docs-<name>.png); with
STEERING_DOCS_SCREENSHOTS=1 also as docs/img/<name>.png, which is how the checked-in ones were made:

    STEERING_DOCS_SCREENSHOTS=1 make test PYTEST_ARGS="tests/browser/test_docs_screenshots.py"
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from steering.models import Backend, PoP
from steering.services.actions import do_drain
from steering.services.context import Actor
from tests.browser.conftest import artifacts_dir, login, password_of, seed_demo
from tests.browser.test_dashboard import open_pop, row
from tests.conftest import IN_CI, make_user
from tests.processes import ROOT

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium fixture says what to install; CI must have it
    if IN_CI:
        raise
    pytest.skip("the playwright Python package is not installed", allow_module_level=True)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DOCS_IMG = ROOT / "docs" / "img"


def shot(page: Any, name: str) -> Path:
    path = artifacts_dir() / f"docs-{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get("STEERING_DOCS_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMG / f"{name}.png"))
    return path


def admin_user() -> Any:
    user = make_user("sam-admin", "admin")
    user.is_staff = user.is_superuser = True
    user.set_password(password_of(user.username))
    user.save()
    return user


def test_the_guides_pictures(open_page: Any, orm: Any) -> None:
    seed_demo()
    user = admin_user()
    fra1 = PoP.objects.get(slug="fra1")
    first, second = Backend.objects.filter(pool__pop=fra1, pool__slug="api-web").order_by("name")[:2]
    page = open_page()

    page.goto("/accounts/login/")
    expect(page.locator("#id_username")).to_be_visible()
    shot(page, "signin")

    login(page, user.username, password_of(user.username))
    expect(page.locator("[data-testid=live-status]")).to_have_attribute("data-state", "live")
    expect(page.locator("[data-testid=pop-marker]").first).to_be_visible()
    shot(page, "map")

    open_pop(page, "fra1")
    expect(row(page, second.pk)).to_be_visible()
    shot(page, "pop-panel")

    # A drain and its what-if, before confirming.
    row(page, second.pk).locator("[data-testid=action-drain]").click()
    dialog = page.locator("[data-testid=action-dialog]")
    dialog.locator("[data-testid=reason]").fill("deploy 1.4.2")
    expect(dialog.locator("[data-testid=whatif]")).to_have_attribute("data-verdict", re.compile(r"\w"))
    shot(page, "drain-whatif")
    dialog.locator("[data-testid=cancel]").click()
    expect(dialog).to_be_hidden()

    # With one backend of the pool already draining, a second is more than the pool can lose: the
    # guard refuses it, and the dialog offers force with a reason of its own.
    orm(lambda: do_drain(first, actor=Actor(name=user.username, source="ui"), reason="kernel upgrade",
                         grace_seconds=3600))
    expect(row(page, first.pk)).to_have_attribute("data-admin-state", "draining")
    row(page, second.pk).locator("[data-testid=action-drain]").click()
    dialog.locator("[data-testid=reason]").fill("deploy 1.4.2")
    dialog.locator("[data-testid=confirm]").click()
    expect(dialog.locator("[data-testid=dialog-error]")).to_contain_text("capacity guard")
    dialog.locator("[data-testid=force]").check()
    dialog.locator("[data-testid=force-reason]").fill("incident 4521: api-2 corrupts responses")
    shot(page, "guard-force")
    dialog.locator("[data-testid=cancel]").click()
    expect(dialog).to_be_hidden()

    timeline = page.locator("[data-testid=timeline]")
    expect(timeline.locator("[data-testid=timeline-entry]", has_text="kernel upgrade").first).to_be_visible()
    shot(page, "timeline")


ICON_OF_PAGE = """async () => {
  const link = document.querySelector('link[rel~=icon]');
  const url = link ? link.href : new URL('/favicon.ico', location.href).href;  // what a browser asks for
  const r = await fetch(url);
  return `${r.status} ${(r.headers.get('content-type') || '').split(';')[0]}`;
}"""


def test_no_page_logs_an_error_or_a_failed_request(open_page: Any) -> None:
    """The sign-in page, the dashboard with its live feed, the admin site and the API docs: no
    console error, no request answered 4xx/5xx, and each page's icon (its <link rel=icon>, else
    /favicon.ico, which headless Chromium does not fetch by itself) answers with an image."""
    seed_demo()
    user = admin_user()
    page = open_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{page.url}: console {m.type}: {m.text[:200]}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"{page.url}: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
    page.on("response", lambda r: problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None)
    icons: dict[str, str] = {}

    page.goto("/accounts/login/")
    expect(page.locator("#id_username")).to_be_visible()
    icons["sign-in"] = page.evaluate(ICON_OF_PAGE)
    login(page, user.username, password_of(user.username))
    expect(page.locator("[data-testid=live-status]")).to_have_attribute("data-state", "live")
    icons["dashboard"] = page.evaluate(ICON_OF_PAGE)
    for path, ready in (("/admin/", "#site-name"), ("/admin/auth/user/", "#result_list"),
                        ("/api/docs/", ".swagger-ui .info .title")):
        page.goto(path)
        expect(page.locator(ready).first).to_be_visible()
        icons[path] = page.evaluate(ICON_OF_PAGE)
    assert problems == []
    assert {page: icon.split()[0] for page, icon in icons.items()} == dict.fromkeys(icons, "200"), icons
    assert all(icon.split()[1].startswith("image/") for icon in icons.values()), icons
