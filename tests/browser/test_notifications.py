"""The dashboard's notifications view: the webhooks, the latest deliveries and the dead letters;
Redeliver sends a dead letter again, and it reaches a real receiver on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.browser.conftest import login, password_of, seed_demo
from tests.browser.playwright_expect import expect
from tests.webhook_receiver import receiver, verify

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SECRET = "whsec_browser-test-secret-0123456789"


def test_a_dead_letter_is_listed_and_redeliver_sends_it_again(open_page, admin, orm, tmp_path):
    from steering.models import WebhookDelivery
    from steering.services import notifications, webhooks
    from steering.services.context import Actor

    seed_demo()
    with receiver() as hook:
        hook.default = 500
        sub, _ = webhooks.do_create_webhook({"name": "oncall-pager", "url": hook.url, "secret": SECRET,
                                             "events": ["drift.detected"]}, actor=Actor.system("test"))
        [pk] = notifications.emit("drift.detected", "3 difference(s) from the fleet file applied", {"n": 3})
        WebhookDelivery.objects.filter(pk=pk).update(attempts=7)
        assert webhooks.deliver(pk) == "dead"  # the eighth and last try: a dead letter
        hook.default = 200

        page = open_page()
        login(page, admin.username, password_of(admin.username))
        view = page.locator("[data-testid=notifications]")
        expect(view.locator("[data-testid=dead-count]")).to_contain_text("1 dead letter")
        view.locator("summary").click()
        expect(view.locator('[data-testid=webhook][data-name="oncall-pager"]')).to_contain_text("drift.detected")
        row = view.locator(f'[data-testid=dead-letters] [data-delivery="{pk}"]')
        expect(row).to_contain_text("drift.detected")
        expect(row).to_contain_text("HTTP 500")
        expect(row).to_have_attribute("data-status", "dead")
        view.screenshot(path=str(tmp_path / "notifications.png"))

        row.locator("[data-testid=redeliver]").click()
        expect(view.locator("[data-testid=notifications-note]")).to_contain_text(f"Delivery #{pk} queued again")
        expect(view.locator("[data-testid=dead-letters-empty]")).to_be_visible()
        expect(view.locator("[data-testid=dead-count]")).to_contain_text("no dead letters")

        assert orm(webhooks.deliver_due) == {"succeeded": 1}  # what the worker's sweep does
        got = hook.requests[-1]
        assert verify(SECRET, got.headers, got.body) and got.json["type"] == "drift.detected"
        expect(view.locator(f'[data-testid=deliveries] [data-delivery="{pk}"]')).to_have_attribute(
            "data-status", "succeeded")
