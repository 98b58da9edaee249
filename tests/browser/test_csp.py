"""The Content-Security-Policy in a real Chromium: every page a person opens (sign-in, the
dashboard with its live feed, the admin site, the API docs, the browsable API that `make run`'s
banner links to) works under it with no violation."""

from __future__ import annotations

import re
from typing import Any

import pytest

from steering.models import Backend
from tests.browser.conftest import login, password_of, seed_demo
from tests.browser.playwright_expect import expect
from tests.conftest import make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_every_page_runs_under_the_policy_with_no_violation(open_page: Any) -> None:
    seed_demo()
    user = make_user("sam-admin", "admin")
    user.is_staff = user.is_superuser = True
    user.set_password(password_of(user.username))
    user.save()
    backend = Backend.objects.order_by("pk").first()  # before the browser: no ORM where its loop runs
    assert backend is not None
    page = open_page()
    violations: list[str] = []
    page.on("console", lambda m: violations.append(f"{page.url}: {m.text[:160]}") if "Content Security Policy" in m.text else None)

    response = page.goto("/accounts/login/")
    assert response is not None
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    # The sign-in page's own styles apply (its <style> carries the nonce): the form is not unstyled.
    assert page.eval_on_selector("body", "b => getComputedStyle(b).display") == "grid"
    login(page, user.username, password_of(user.username))
    expect(page.locator("[data-testid=live-status]")).to_have_attribute("data-state", "live")

    page.goto("/admin/")
    expect(page.locator("#site-name")).to_be_visible()
    page.goto("/admin/auth/user/")
    expect(page.locator("#result_list, .paginator").first).to_be_visible()

    page.goto("/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_have_text(re.compile(r"Steering API"))

    # DRF's browsable API: its templates set style attributes, allowed there (steering/urls.py) and
    # nowhere else; its stylesheets apply (Bootstrap's navbar is not an unstyled list).
    for path in ("/api/v1/", "/api/v1/backends/", f"/api/v1/backends/{backend.pk}/"):
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        expect(page.locator(".response-info")).to_be_visible()
        policy = response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in policy and "style-src-attr 'unsafe-inline'" in policy, policy
        assert page.eval_on_selector(".navbar", "n => getComputedStyle(n).minHeight") == "50px"  # Bootstrap's
    # The dashboard's own policy is not relaxed by that.
    dashboard = page.goto("/")
    assert dashboard is not None and "unsafe-inline" not in dashboard.headers.get("content-security-policy", "")

    assert violations == []
