"""The webhooks API: the secret shown once and never read back, field errors for what cannot be,
If-Match on writes, the delivery log and the dead-letter list."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

from steering.models import WebhookDelivery, WebhookSubscription
from tests import factories as f

API = "/api/v1"


def test_it_shows_a_generated_secret_once_and_never_again(admin_api: APIClient) -> None:
    region = f.region()
    created = admin_api.post(f"{API}/webhooks/", {"name": "oncall", "url": "https://hooks.example.net/x",
                                                  "events": ["operation.failed", "guard.refused"],
                                                  "regions": [region.slug]}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_") and body["secret"] == WebhookSubscription.objects.get().secret
    assert body["events"] == ["guard.refused", "operation.failed"] and body["regions"] == [region.slug]
    assert body["format"] == "json" and body["enabled"] is True and body["created_by"] == admin_api.user.username  # type: ignore[attr-defined]
    for url in (f"{API}/webhooks/", f"{API}/webhooks/{body['id']}/"):
        assert body["secret"] not in admin_api.get(url).content.decode()

    given = admin_api.post(f"{API}/webhooks/", {"name": "mine", "url": "http://hooks.example.net/y",
                                                "secret": "a-secret-of-my-own-choosing"}, format="json")
    assert given.status_code == 201 and given.json()["secret"] is None


def test_it_answers_field_errors_for_a_webhook_that_cannot_be(admin_api: APIClient) -> None:
    cases = {
        "url": {"name": "a", "url": "ftp://hooks.example.net/x"},
        "events": {"name": "b", "url": "https://hooks.example.net/x", "events": ["operation.exploded"]},
        "regions": {"name": "c", "url": "https://hooks.example.net/x", "regions": ["atlantis"]},
        "secret": {"name": "d", "url": "https://hooks.example.net/x", "secret": "short"},
        "format": {"name": "e", "url": "https://hooks.example.net/x", "format": "xml"},
    }
    for field, body in cases.items():
        response = admin_api.post(f"{API}/webhooks/", body, format="json")
        assert response.status_code == 400, (field, response.content)
        assert field in response.json()["errors"], (field, response.json())
    assert not WebhookSubscription.objects.exists()
    admin_api.post(f"{API}/webhooks/", {"name": "taken", "url": "https://hooks.example.net/x"}, format="json")
    again = admin_api.post(f"{API}/webhooks/", {"name": "taken", "url": "https://hooks.example.net/z"}, format="json")
    assert again.status_code == 400 and "name" in again.json()["errors"]


def test_it_refuses_a_stale_write(admin_api: APIClient) -> None:
    created = admin_api.post(f"{API}/webhooks/", {"name": "oncall", "url": "https://hooks.example.net/x"},
                             format="json")
    url = f"{API}/webhooks/{created.json()['id']}/"
    etag = admin_api.get(url)["ETag"]
    assert admin_api.patch(url, {"enabled": False}, format="json", HTTP_IF_MATCH=etag).status_code == 200
    stale = admin_api.patch(url, {"enabled": True}, format="json", HTTP_IF_MATCH=etag)
    assert stale.status_code == 412 and stale.json()["code"] == "stale"
    assert admin_api.delete(url, HTTP_IF_MATCH=admin_api.get(url)["ETag"]).status_code == 204
    assert not WebhookSubscription.objects.exists()


def test_it_lists_deliveries_per_webhook_and_the_dead_letters(operator_api: APIClient, db: Any) -> None:
    one = WebhookSubscription.objects.create(name="one", url="https://hooks.example.net/1", secret="s" * 20)
    two = WebhookSubscription.objects.create(name="two", url="https://hooks.example.net/2", secret="s" * 20)
    rows = {(sub.name, status): WebhookDelivery.objects.create(
        subscription=sub, event_type="operation.failed", event_id=f"evt_{sub.name}_{status}", status=status,
        payload={"summary": f"{sub.name} {status}"}) for sub in (one, two) for status in ("dead", "succeeded")}

    log = operator_api.get(f"{API}/webhooks/{one.pk}/deliveries/").json()
    dead = operator_api.get(f"{API}/webhook-deliveries/?status=dead").json()

    assert sorted(d["id"] for d in log["results"]) == sorted([rows["one", "dead"].pk, rows["one", "succeeded"].pk])
    assert sorted(d["id"] for d in dead["results"]) == sorted([rows["one", "dead"].pk, rows["two", "dead"].pk])
    assert {d["summary"] for d in dead["results"]} == {"one dead", "two dead"}
    assert operator_api.get(f"{API}/webhook-deliveries/?status=lost").status_code == 400
