"""The operator guide's pictures (docs/operator-guide.md), taken from the real dashboard, and a clean
browser console on every page a person opens.

The pictures show the map `make run` shows: stand-ins for the three layers' agents report through
the API's own services (tests/browser/live_dataplanes.py), so the header says every layer is
connected, backends are up and the versions applied.

Keeping them current. Each picture is saved among the test artifacts ($STEERING_ARTIFACTS_DIR, as
docs-<name>.png). A pixel comparison with the checked-in ones would fail on a clock, a font or an
anti-aliased edge, so what is compared is what the picture *shows*: for each picture, the
data-testid names of the elements visible in the window, each layer's connection in the header,
the applied-versions state and the picture's size. docs/img/pictures.json holds that for the
checked-in pictures; every run compares the dashboard with it and fails when they differ (a
panel added, a layer no longer connected, a dialog gone), saying to take the pictures again:

    STEERING_DOCS_SCREENSHOTS=1 make test PYTEST_ARGS="tests/browser/test_docs_screenshots.py"

which writes docs/img/<name>.png and docs/img/pictures.json (look at the pictures, then commit).
The header must also fit the window: no status cut off or hidden at 1280 px.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from steering.models import Backend, PoP
from steering.services.actions import do_drain
from steering.services.context import Actor
from tests.browser.conftest import VIEWPORT, artifacts_dir, login, password_of, seed_demo
from tests.browser.live_dataplanes import LiveDataplanes, mark_backends_up
from tests.browser.playwright_expect import expect
from tests.browser.test_dashboard import open_pop, row
from tests.conftest import make_user
from tests.processes import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DOCS_IMG = ROOT / "docs" / "img"
PICTURES = DOCS_IMG / "pictures.json"
REGENERATE = os.environ.get("STEERING_DOCS_SCREENSHOTS") == "1"
AGAIN = 'STEERING_DOCS_SCREENSHOTS=1 make test PYTEST_ARGS="tests/browser/test_docs_screenshots.py"'

# What a picture shows, in terms that do not move with clocks, fonts or ids.
SHOWN = """() => {
  const inView = (e) => {
    const r = e.getBoundingClientRect();
    return e.checkVisibility() && r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0
      && r.top < innerHeight && r.left < innerWidth;
  };
  const ids = [...document.querySelectorAll('[data-testid]')].filter(inView).map((e) => e.dataset.testid);
  const layers = {};
  for (const e of document.querySelectorAll('[data-testid=dataplane-status] [data-layer]')) {
    layers[e.dataset.layer] = e.dataset.connected === 'true' ? 'connected' : 'not connected';
  }
  const applied = document.querySelector('[data-testid=applied-summary]');
  return {testids: [...new Set(ids)].sort(), layers, applied: applied ? applied.dataset.state : null};
}"""

# Every child of the header inside the window and none clipped (its full width drawn).
HEADER_CLIPPED = """() => {
  const bar = document.querySelector('header.bar');
  const out = [];
  for (const e of bar.querySelectorAll(':scope > *, [data-testid=dataplane-status] > *')) {
    const r = e.getBoundingClientRect();
    if (r.width === 0) continue;
    if (r.left < 0 || r.right > innerWidth || e.scrollWidth > e.clientWidth + 1) out.push(e.textContent.trim());
  }
  if (bar.scrollWidth > bar.clientWidth) out.push(`the header scrolls: ${bar.scrollWidth} > ${bar.clientWidth}`);
  return out;
}"""


def png_size(path: Path) -> list[int]:
    """Width and height from the PNG header (its IHDR chunk)."""
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return [width, height]


def differ(recorded: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]]) -> list[str]:
    """What changed, picture by picture, in words a developer reads."""
    out = [f"{name}: {'no longer taken' if name in recorded else 'new'}" for name in sorted(set(recorded) ^ set(now))]
    for name in sorted(set(recorded) & set(now)):
        was, is_ = recorded[name], now[name]
        gone, new = sorted(set(was["testids"]) - set(is_["testids"])), sorted(set(is_["testids"]) - set(was["testids"]))
        out += [f"{name}: {what} {ids}" for what, ids in (("no longer shows", gone), ("now shows", new)) if ids]
        out += [f"{name}: {key} was {was.get(key)!r}, is {is_.get(key)!r}"
                for key in ("layers", "applied", "size") if was.get(key) != is_.get(key)]
    return out


class Pictures:
    """Takes each picture, and notes what it shows for the check against docs/img/pictures.json."""

    def __init__(self) -> None:
        self.shown: dict[str, dict[str, Any]] = {}

    def shot(self, page: Any, name: str) -> Path:
        path = artifacts_dir() / f"docs-{name}.png"
        page.screenshot(path=str(path))
        self.shown[name] = {**page.evaluate(SHOWN), "size": png_size(path)}
        if REGENERATE:
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            (DOCS_IMG / f"{name}.png").write_bytes(path.read_bytes())
        return path

    def check(self) -> None:
        """Write pictures.json (regenerating), else hold the dashboard to it and the files to both."""
        if REGENERATE:
            PICTURES.write_text(json.dumps(self.shown, indent=1, sort_keys=True) + "\n")
            return
        recorded = json.loads(PICTURES.read_text())
        differences = differ(recorded, self.shown)
        assert not differences, (
            "the dashboard no longer shows what the guide's pictures show (docs/img/pictures.json):\n  "
            + "\n  ".join(differences) + f"\ntake them again, look at them and commit docs/img:\n    {AGAIN}")
        for name, shown in recorded.items():
            assert png_size(DOCS_IMG / f"{name}.png") == shown["size"], f"docs/img/{name}.png: run {AGAIN}"
        guide = (ROOT / "docs" / "operator-guide.md").read_text()
        assert set(re.findall(r"\]\(img/([\w-]+)\.png\)", guide)) == set(recorded), "docs/operator-guide.md"
        assert {p.stem for p in DOCS_IMG.glob("*.png")} == set(recorded), "docs/img holds a picture no test takes"


def admin_user() -> Any:
    user = make_user("sam-admin", "admin")
    user.is_staff = user.is_superuser = True
    user.set_password(password_of(user.username))
    user.save()
    return user


def settle(page: Any) -> None:
    """The header as `make run` shows it once everything is up: every layer connected, in sync."""
    for layer in ("local", "dns", "anycast"):
        expect(page.locator(f"[data-testid=dataplane-status] [data-layer={layer}]")).to_have_attribute(
            "data-connected", "true")
    # In sync with the version on screen (the data-plane poll runs every 5 s; the version is live).
    version = page.locator("header .version").inner_text()
    summary = page.locator("[data-testid=applied-summary]")
    expect(summary).to_have_attribute("data-state", "in_sync")
    expect(summary).to_have_text(re.compile(rf"{re.escape(version)} applied"))
    assert page.evaluate(HEADER_CLIPPED) == [], "the header does not fit the window"


def test_the_guides_pictures(open_page: Any, orm: Any) -> None:
    seed_demo()
    user = admin_user()
    mark_backends_up()
    fra1 = PoP.objects.get(slug="fra1")
    first, second = Backend.objects.filter(pool__pop=fra1, pool__slug="api-web").order_by("name")[:2]
    pictures = Pictures()
    with LiveDataplanes() as agents:
        page = open_page()
        assert page.viewport_size == VIEWPORT

        page.goto("/accounts/login/")
        expect(page.locator("#id_username")).to_be_visible()
        pictures.shot(page, "signin")

        login(page, user.username, password_of(user.username))
        expect(page.locator("[data-testid=live-status]")).to_have_attribute("data-state", "live")
        expect(page.locator("[data-testid=pop-marker]").first).to_be_visible()
        expect(page.locator("[data-testid=timeline-entry]").first).to_be_visible()
        try:
            settle(page)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nthe stand-in agents' last error: {agents.last_error or 'none'}") from exc
        pictures.shot(page, "map")

        open_pop(page, "fra1")
        expect(row(page, second.pk)).to_have_attribute("data-health", "up")
        expect(page.locator("[data-testid=applied]").first).to_be_visible()
        expect(page.locator(".anycast-line")).to_contain_text("in sync")  # the anycast poll has answered
        settle(page)
        pictures.shot(page, "pop-panel")

        # A drain and its what-if, before confirming.
        row(page, second.pk).locator("[data-testid=action-drain]").click()
        dialog = page.locator("[data-testid=action-dialog]")
        dialog.locator("[data-testid=reason]").fill("deploy 1.4.2")
        expect(dialog.locator("[data-testid=whatif]")).to_have_attribute("data-verdict", re.compile(r"\w"))
        settle(page)
        pictures.shot(page, "drain-whatif")
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
        settle(page)
        pictures.shot(page, "guard-force")
        dialog.locator("[data-testid=cancel]").click()
        expect(dialog).to_be_hidden()

        timeline = page.locator("[data-testid=timeline]")
        expect(timeline.locator("[data-testid=timeline-entry]", has_text="kernel upgrade").first).to_be_visible()
        settle(page)
        pictures.shot(page, "timeline")
    pictures.check()


ICON_OF_PAGE = """async () => {
  const link = document.querySelector('link[rel~=icon]');
  const url = link ? link.href : new URL('/favicon.ico', location.href).href;  // what a browser asks for
  const r = await fetch(url);
  return `${r.status} ${(r.headers.get('content-type') || '').split(';')[0]}`;
}"""


def test_no_page_logs_an_error_or_a_failed_request(open_page: Any) -> None:
    """The sign-in page, the dashboard with its live feed, the admin site, the API docs and the
    browsable API (its root, a list and an object): no console error, no request answered 4xx/5xx,
    and each page's icon (its <link rel=icon>, else /favicon.ico, which headless Chromium does not
    fetch by itself) answers with an image."""
    seed_demo()
    user = admin_user()
    backend = Backend.objects.order_by("pk").first()  # before the browser: no ORM where its loop runs
    assert backend is not None
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
    # No data plane runs here: the header says so for each layer, and still fits at 1280 px.
    for layer in ("local", "dns", "anycast"):
        expect(page.locator(f"[data-testid=dataplane-status] [data-layer={layer}]")).to_have_attribute(
            "data-connected", "false")
    assert page.evaluate(HEADER_CLIPPED) == [], "the header does not fit the window"
    page.screenshot(path=str(artifacts_dir() / "dashboard-not-connected.png"))
    # The browsable API too: `make run`'s banner links to /api/v1/, so a newcomer opens it first.
    # The API docs stay last: leaving them at once would cancel Swagger UI's icon (ERR_ABORTED).
    for path, ready in (("/admin/", "#site-name"), ("/admin/auth/user/", "#result_list"),
                        ("/api/v1/", ".response-info"), ("/api/v1/backends/", ".response-info"),
                        (f"/api/v1/backends/{backend.pk}/", ".response-info"),
                        ("/api/docs/", ".swagger-ui .info .title")):
        page.goto(path)
        expect(page.locator(ready).first).to_be_visible()
        icons[path] = page.evaluate(ICON_OF_PAGE)
    assert problems == []
    assert {page: icon.split()[0] for page, icon in icons.items()} == dict.fromkeys(icons, "200"), icons
    assert all(icon.split()[1].startswith("image/") for icon in icons.values()), icons
