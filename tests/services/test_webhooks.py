"""Webhooks against a real HTTP receiver on 127.0.0.1: signatures, filters, the events the product
emits (operations, the guard, health grouped per pool, data planes, drift), retries with backoff,
dead letters and redelivery, and the Slack-compatible body.

Deliveries are sent by calling the Celery tasks' service functions directly (webhooks.deliver,
webhooks.deliver_due), as the other timer tests do: the worker's own path, without a broker."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from steering.choices import DeliveryStatus, Health, OperationStatus
from steering.models import Backend, Change, DataplaneState, HealthEvent, WebhookDelivery, WebhookSubscription
from steering.models.webhooks import MAX_PAYLOAD_BYTES
from steering.readmodels.version import current_version
from steering.services import notifications, watchers, webhooks
from steering.services.actions import do_drain
from steering.services.context import Actor
from steering.services.health import record_transitions
from steering.services.weights import advance_ramp, do_set_weight
from tests import factories as f
from tests.webhook_receiver import Receiver, receiver, verify

ADMIN = Actor.system("test-admin")
SECRET = "whsec_test-secret-of-enough-length"


@pytest.fixture
def hook() -> Any:
    with receiver() as r:
        yield r


def subscribe(r: Receiver, **kw: Any) -> WebhookSubscription:
    sub, _ = webhooks.do_create_webhook({"name": kw.pop("name", "oncall"), "url": r.url, "secret": SECRET, **kw},
                                        actor=ADMIN)
    return sub


def send_all() -> dict[str, int]:
    return webhooks.deliver_due(now=timezone.now() + datetime.timedelta(seconds=1))


# --- signing and the body --------------------------------------------------------------------


def test_it_signs_the_raw_body_so_the_receiver_verifies_it_with_the_secret_and_not_another(hook: Receiver, db: Any) -> None:
    sub = subscribe(hook)
    delivery = webhooks.do_send_test(sub, actor=ADMIN)

    assert webhooks.deliver(delivery.pk) == "succeeded"

    [got] = hook.requests
    assert got.path == "/hooks/steering"
    assert verify(SECRET, got.headers, got.body)
    assert not verify("whsec_some-other-secret-entirely", got.headers, got.body)
    tampered = got.body.replace(b"webhook.test", b"webhook.tost")
    assert not verify(SECRET, got.headers, tampered)
    # The timestamp is signed too: the same body under another time does not verify (no replay).
    assert not verify(SECRET, {**got.headers, "x-steering-timestamp": str(int(got.headers["x-steering-timestamp"]) + 600)},
                      got.body)
    assert abs(int(got.headers["x-steering-timestamp"]) - time.time()) < 60
    body = got.json
    assert got.headers["x-steering-event-id"] == body["id"] == delivery.event_id
    assert got.headers["x-steering-event"] == body["type"] == "webhook.test"
    assert got.headers["x-steering-delivery"] == str(delivery.pk)
    assert got.headers["content-type"] == "application/json"
    assert body["summary"] == f"Test delivery to oncall, asked by {ADMIN.name}"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (DeliveryStatus.SUCCEEDED, 1, 200)
    assert Change.objects.filter(action="webhook.test", object_id=sub.pk).count() == 1


def test_it_is_verified_by_the_receiver_code_the_operator_guide_shows(hook: Receiver, db: Any) -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operator-guide.md").read_text()
    section = guide.split("## Notifications: webhooks", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(code, scope)  # noqa: S102  (our own documentation's example)
    sub = subscribe(hook)
    webhooks.deliver(webhooks.do_send_test(sub, actor=ADMIN).pk)
    [got] = hook.requests
    headers = {name.title(): value for name, value in got.headers.items()}  # as a web framework names them

    assert scope["verified"](SECRET, headers, got.body)
    assert not scope["verified"]("whsec_not-the-secret-at-all", headers, got.body)
    assert not scope["verified"](SECRET, headers, got.body + b" ")
    stale = {**headers, "X-Steering-Timestamp": str(int(headers["X-Steering-Timestamp"]) - 3600)}
    assert not scope["verified"](SECRET, stale, got.body)


def test_it_sends_a_slack_compatible_body_when_asked(hook: Receiver, db: Any) -> None:
    sub = subscribe(hook, format="slack")
    backend = f.fleet(backends=4).backends.first()
    assert backend is not None
    do_drain(backend, actor=Actor.system("alice"), reason="deploy <1.4.2> & more", grace_seconds=60)

    send_all()

    [got] = hook.of_type("operation.started")
    body = got.json
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith(f"[operation.started] drain {backend.path} started (system:alice: “deploy &lt;1.4.2&gt; &amp; more”)")
    assert body["blocks"][0] == {"type": "section", "text": {"type": "mrkdwn", "text": body["text"]}}
    assert body["blocks"][1]["type"] == "context" and got.headers["x-steering-event-id"] in body["blocks"][1]["elements"][0]["text"]
    assert verify(SECRET, got.headers, got.body)  # signed all the same
    assert sub.deliveries.get().format == "slack"


# --- filters ------------------------------------------------------------------------------------


def test_it_sends_each_subscription_only_the_events_regions_and_services_it_asked_for(hook: Receiver, db: Any) -> None:
    pool_a = f.fleet(backends=4)
    pool_b = f.fleet(backends=4)
    region_a, service_b = pool_a.pop.region, pool_b.service
    everything = subscribe(hook, name="everything")
    only_started = subscribe(hook, name="only-started", events=["operation.started"])
    only_region_a = subscribe(hook, name="region-a", regions=[region_a.slug])
    only_service_b = subscribe(hook, name="service-b", services=[service_b.slug])
    subscribe(hook, name="disabled", enabled=False)

    for pool in (pool_a, pool_b):
        do_drain(pool.backends.first(), actor=ADMIN, reason="filters", grace_seconds=60)  # type: ignore[arg-type]
    notifications.emit("drift.detected", "fleet-wide", {})  # names no region or service: concerns all

    def seen(sub: WebhookSubscription) -> list[tuple[str, list[str]]]:
        return sorted((d.event_type, d.payload["regions"]) for d in sub.deliveries.all())

    a, b = [region_a.slug], [pool_b.pop.region.slug]
    assert seen(everything) == sorted([("operation.started", a), ("operation.started", b), ("drift.detected", [])])
    assert seen(only_started) == sorted([("operation.started", a), ("operation.started", b)])
    assert seen(only_region_a) == sorted([("operation.started", a), ("drift.detected", [])])
    assert seen(only_service_b) == sorted([("operation.started", b), ("drift.detected", [])])
    assert not WebhookDelivery.objects.filter(subscription__name="disabled").exists()
    for d in only_service_b.deliveries.filter(event_type="operation.started"):
        assert d.payload["services"] == [service_b.slug]


def test_it_audits_a_subscription_without_its_secret_or_the_url_s_path(db: Any) -> None:
    url = "https://hooks.slack.example/services/T000/B000/XXXXSECRETPATH"
    sub, generated = webhooks.do_create_webhook({"name": "chat", "url": url, "format": "slack"}, actor=ADMIN)
    webhooks.do_update_webhook(sub, {"secret": "whsec_a-brand-new-secret-value"}, actor=ADMIN, reason="rotated")

    assert generated is not None and generated.startswith("whsec_") and sub.secret == generated
    created, rotated = Change.objects.filter(object_type="webhooksubscription").order_by("id")
    assert (created.action, rotated.action) == ("webhook.create", "webhook.update")
    assert created.after["url"] == "https://hooks.slack.example/…"
    assert (rotated.before["secret"], rotated.after["secret"]) == ("set", "replaced")
    every_row = json.dumps([created.before, created.after, rotated.before, rotated.after])
    assert "XXXXSECRETPATH" not in every_row and generated not in every_row and "brand-new" not in every_row
    sub.refresh_from_db()
    assert sub.secret == "whsec_a-brand-new-secret-value"


def test_it_refuses_a_subscription_that_cannot_be(db: Any) -> None:
    from steering.services.errors import InvalidInput

    with pytest.raises(InvalidInput) as caught:
        webhooks.do_create_webhook({"name": " ", "url": "ftp://example.net/x", "events": ["no.such"],
                                    "regions": ["atlantis"], "secret": "short"}, actor=ADMIN)
    assert set(caught.value.errors) == {"name", "url", "events", "regions", "secret"}


# --- what emits ---------------------------------------------------------------------------------


def test_it_tells_the_receiver_an_operation_started_and_finished(hook: Receiver, db: Any) -> None:
    subscribe(hook)
    backend = f.fleet(backends=4).backends.first()
    assert backend is not None

    op, _ = do_drain(backend, actor=Actor.system("alice"), reason="deploy 1.4.2", grace_seconds=0)
    send_all()

    assert op is not None and op.status == OperationStatus.SUCCEEDED
    [started] = hook.of_type("operation.started")
    [finished] = hook.of_type("operation.finished")
    for got in (started, finished):
        data = got.json["data"]["operation"]
        assert (data["id"], data["kind"], data["actor"], data["reason"]) == (op.pk, "drain", "system:alice", "deploy 1.4.2")
        assert data["target"] == {"type": "backend", "id": backend.pk, "name": backend.path}
        assert got.json["regions"] == [backend.pool.pop.region.slug]
        assert got.json["services"] == [backend.pool.service.slug]
    assert finished.json["data"]["operation"]["status"] == "succeeded"
    assert "succeeded" in finished.json["summary"]


def test_it_tells_of_a_paused_weight_ramp(hook: Receiver, db: Any) -> None:
    subscribe(hook, events=["operation.paused"])
    backend = f.fleet(backends=4).backends.first()
    assert backend is not None
    op, _ = do_set_weight(backend, actor=ADMIN, reason="ramp", weight=50, ramp_seconds=60)
    assert op is not None
    Backend.objects.filter(pk=backend.pk).update(health=Health.DOWN)

    assert advance_ramp(op.pk) == "paused"
    send_all()

    [paused] = hook.requests
    assert paused.json["type"] == "operation.paused"
    assert "backend health went down" in paused.json["summary"]


def test_it_tells_of_a_guard_refusal_and_of_a_forced_override(hook: Receiver, operator_api: Any) -> None:
    subscribe(hook, events=["guard.refused", "guard.forced"])
    pool = f.fleet(backends=2, capacity_rps=1000, expected_rps=2000)  # one backend cannot carry it alone
    backend = pool.backends.first()
    assert backend is not None
    url = f"/api/v1/backends/{backend.pk}/drain/"

    refused = operator_api.post(url, {"reason": "deploy", "grace_seconds": 30}, format="json")
    forced = operator_api.post(url, {"reason": "deploy", "grace_seconds": 30, "force": True,
                                     "force_reason": "the old build leaks memory"}, format="json")
    send_all()

    assert refused.status_code == 409 and refused.json()["code"] == "capacity_guard", refused.content
    assert forced.status_code == 202, forced.content
    [r] = hook.of_type("guard.refused")
    [g] = hook.of_type("guard.forced")
    assert r.json["data"]["code"] == "capacity_guard"
    assert r.json["data"]["actor"] == operator_api.user.username
    assert r.json["data"]["target"]["id"] == backend.pk and r.json["regions"] == [pool.pop.region.slug]
    assert r.json["data"]["impact"]["verdict"] in ("overload", "outage")
    assert g.json["data"]["force_reason"] == "the old build leaks memory"
    assert g.json["data"]["operation"]["id"] == forced.json()["operation"]["id"]
    assert "forced drain" in g.json["summary"]


def test_it_tells_of_a_safety_rule_refusal_by_the_rule_s_name(hook: Receiver, operator_api: Any) -> None:
    from steering.models import SafetyRule

    subscribe(hook, events=["guard.refused"])
    pool = f.fleet(backends=4)
    SafetyRule.objects.create(slug="never-half", kind="max_pool_out_percent", pool=pool, threshold=10)
    backend = pool.backends.first()
    assert backend is not None

    refused = operator_api.post(f"/api/v1/backends/{backend.pk}/drain/", {"reason": "x", "grace_seconds": 30}, format="json")
    send_all()

    assert refused.status_code == 409 and refused.json()["code"] == "safety_rule"
    [r] = hook.requests
    assert r.json["data"]["rules"] == ["never-half"]
    assert "safety rule never-half" in r.json["summary"]


def test_it_groups_health_transitions_per_pool_and_window(hook: Receiver, db: Any) -> None:
    subscribe(hook, events=["health.changed"])
    pool = f.fleet(backends=5, monitor=f.monitor())
    other = f.fleet(backends=2, monitor=f.monitor())
    b = list(pool.backends.order_by("pk"))
    Backend.objects.filter(pool__in=[pool, other]).update(health=Health.UP)
    assert watchers.health_changes() == 0  # the first run starts from now: no history replayed
    evidence = {"check": "http", "result": "status", "status": 503, "fail_streak": 3, "fall": 3}

    record_transitions(pool.pk, [(b[0].pk, Health.DOWN, evidence), (b[1].pk, Health.DOWN, evidence)])
    record_transitions(pool.pk, [(b[2].pk, Health.DOWN, evidence)])
    record_transitions(pool.pk, [(b[3].pk, Health.DOWN, evidence)])   # b3 flaps ...
    record_transitions(pool.pk, [(b[3].pk, Health.UP, {"check": "http", "ok_streak": 2, "rise": 2})])  # ... and is back
    record_transitions(other.pk, [(other.backends.first().pk, Health.DOWN, evidence)])  # type: ignore[union-attr]
    assert HealthEvent.objects.count() == 6

    assert watchers.health_changes() == 2  # one event per pool, however many transitions
    assert watchers.health_changes() == 0  # and told once
    send_all()

    assert len(hook.requests) == 2
    [mine] = [r for r in hook.requests if r.json["data"]["pool"]["id"] == pool.pk]
    data = mine.json["data"]
    assert [x["backend"] for x in data["down"]] == [b[0].name, b[1].name, b[2].name]
    assert data["down"][0]["evidence"]["status"] == 503
    assert data["flapped"] == [{"backend": b[3].name, "id": b[3].pk, "from": "up", "to": "up", "transitions": 2,
                                "evidence": {"check": "http"}}]
    assert mine.json["summary"].startswith(f"{pool.pop.slug}/{pool.slug}: 3 down ({b[0].name}, {b[1].name}, {b[2].name})")
    assert mine.json["regions"] == [pool.pop.region.slug] and mine.json["services"] == [pool.service.slug]


def test_it_tells_once_when_a_data_plane_disconnects_or_lags_and_when_it_recovers(hook: Receiver, db: Any,
                                                                                 settings: Any) -> None:
    settings.STEERING_WEBHOOK_AGENT_SILENT_SECONDS = 60
    settings.STEERING_WEBHOOK_LAG_SECONDS = 30
    subscribe(hook, events=["dataplane.disconnected", "dataplane.lagging", "dataplane.recovered"])
    pool = f.fleet(backends=2)
    pop = pool.pop
    other, _ = webhooks.do_create_webhook({"name": "bumps-the-version", "url": hook.url, "secret": SECRET,
                                           "enabled": False}, actor=ADMIN)  # any audited change moves the version
    version = current_version()
    now = time.time()
    row = DataplaneState.objects.create(layer="local", pop=pop, applied_version=version,
                                        seen_at=datetime.datetime.fromtimestamp(now - 5, tz=datetime.UTC))

    def tick(at: float) -> list[str]:
        before = len(hook.requests)
        watchers.dataplane_changes(now=at)
        send_all()
        return [r.json["type"] for r in hook.requests[before:]]

    assert tick(now) == []                                  # in sync and seen: ok, nothing to tell
    assert tick(now + 100) == ["dataplane.disconnected"]    # silent past the threshold
    assert tick(now + 110) == []                            # still silent: told once
    DataplaneState.objects.filter(pk=row.pk).update(seen_at=datetime.datetime.fromtimestamp(now + 115, tz=datetime.UTC))
    assert tick(now + 120) == ["dataplane.recovered"]
    # A change the agent never applies: lagging once the lag passes the threshold, once.
    webhooks.do_update_webhook(other, {"format": "slack"}, actor=ADMIN)  # the next version, never applied
    change_time = Change.objects.order_by("-id").values_list("time", flat=True).first()
    assert change_time is not None
    t = change_time.timestamp()
    DataplaneState.objects.filter(pk=row.pk).update(seen_at=datetime.datetime.fromtimestamp(t + 40, tz=datetime.UTC))
    assert tick(t + 10) == []                               # applying, within the threshold
    assert tick(t + 45) == ["dataplane.lagging"]
    assert tick(t + 50) == []
    [lagging] = hook.of_type("dataplane.lagging")
    data = lagging.json["data"]
    assert (data["layer"], data["pop"], data["desired_version"], data["applied_version"]) == ("local", pop.slug, version + 1, version)
    assert lagging.json["regions"] == [pop.region.slug]


def test_it_tells_of_drift_from_the_fleet_file_once_and_when_it_is_gone(hook: Receiver, db: Any) -> None:
    from steering.services import fleet

    subscribe(hook, events=["drift.detected", "drift.resolved"])
    backend = f.fleet(backends=3).backends.first()
    assert backend is not None
    document, _fingerprint = fleet.export_document()
    fleet.do_apply(fleet.parse_file(document), actor=Actor.system("pipeline"), reason="fleet.yaml as reviewed")
    assert watchers.drift_changes() == 0  # the fleet is the file

    weight = backend.weight
    do_set_weight(backend, actor=Actor(name="otto-operator", source="ui"), reason="canary by hand", weight=weight // 2)
    assert watchers.drift_changes() == 1
    assert watchers.drift_changes() == 0  # the same drift: told once
    do_set_weight(backend, actor=Actor(name="otto-operator", source="ui"), reason="canary over", weight=weight)
    assert watchers.drift_changes() == 1
    send_all()

    assert [r.json["type"] for r in hook.requests] == ["drift.detected", "drift.resolved"]
    detected = hook.requests[0].json
    [difference] = detected["data"]["differences"]
    assert difference["key"] == backend.path and "weight" in difference["fields"]
    assert "changed by otto-operator" in detected["summary"]


def test_it_reads_no_drift_while_nobody_subscribes_to_it(hook: Receiver, db: Any) -> None:
    subscribe(hook, events=["operation.failed"])
    from steering.models import NotificationCursor

    assert watchers.drift_changes() == 0
    assert not NotificationCursor.objects.filter(key=watchers.DRIFT).exists()
    # Health read nobody's way is passed over, not kept for a subscriber that comes later.
    pool = f.fleet(backends=2, monitor=f.monitor())
    assert watchers.health_changes() == 0
    record_transitions(pool.pk, [(b.pk, Health.DOWN, {}) for b in pool.backends.all()])
    assert watchers.health_changes() == 0
    subscribe(hook, name="health-later", events=["health.changed"])
    assert watchers.health_changes() == 0
    assert not WebhookDelivery.objects.exists()


# --- retries, dead letters, redelivery ----------------------------------------------------------


def test_it_retries_with_backoff_until_the_receiver_answers(hook: Receiver, db: Any, settings: Any) -> None:
    settings.STEERING_WEBHOOK_BACKOFF_SECONDS = 10
    hook.script = [500, 503]
    sub = subscribe(hook)
    delivery = webhooks.do_send_test(sub, actor=ADMIN)
    start = timezone.now()

    assert webhooks.deliver(delivery.pk) == "failed"
    delivery.refresh_from_db()
    first_wait = (delivery.next_attempt_at - start).total_seconds()  # type: ignore[operator]
    assert 5 <= first_wait <= 11, first_wait  # 10 s with up to half of it jitter
    assert (delivery.last_status_code, delivery.attempts) == (500, 1)
    assert delivery.last_error.startswith("HTTP 500") and "receiver says no" in delivery.last_error

    assert webhooks.deliver_due(now=start) == {}  # not due yet: nothing sent
    assert webhooks.deliver_due(now=delivery.next_attempt_at) == {"failed": 1}
    delivery.refresh_from_db()
    second_wait = (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds()  # type: ignore[operator]
    assert 10 <= second_wait <= 21, second_wait  # doubled
    assert webhooks.deliver_due(now=delivery.next_attempt_at) == {"succeeded": 1}

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        DeliveryStatus.SUCCEEDED, 3, 200, "")
    assert len(hook.requests) == 3
    assert len({r.headers["x-steering-event-id"] for r in hook.requests}) == 1  # the same event, tried again


def test_it_gives_up_after_the_last_try_and_a_redelivery_sends_it_again(hook: Receiver, admin_api: Any,
                                                                         settings: Any) -> None:
    settings.STEERING_WEBHOOK_MAX_ATTEMPTS = 3
    hook.default = 500
    sub = subscribe(hook)
    delivery = webhooks.do_send_test(sub, actor=ADMIN)
    far = timezone.now() + datetime.timedelta(days=1)

    results = [webhooks.deliver_due(now=far + datetime.timedelta(days=i)) for i in range(4)]  # each past the backoff

    assert results == [{"failed": 1}, {"failed": 1}, {"dead": 1}, {}]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == (DeliveryStatus.DEAD, 3, None)
    dead = admin_api.get("/api/v1/webhook-deliveries/?status=dead").json()
    assert [d["id"] for d in dead["results"]] == [delivery.pk]
    assert dead["results"][0]["last_error"].startswith("HTTP 500")

    hook.default = 200
    answer = admin_api.post(f"/api/v1/webhook-deliveries/{delivery.pk}/redeliver/", {}, format="json")
    assert answer.status_code == 202, answer.content
    assert answer.json()["status"] == "pending"
    assert webhooks.deliver_due(now=far + datetime.timedelta(days=5)) == {"succeeded": 1}
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SUCCEEDED, 1)
    assert admin_api.get("/api/v1/webhook-deliveries/?status=dead").json()["results"] == []
    again = admin_api.post(f"/api/v1/webhook-deliveries/{delivery.pk}/redeliver/", {}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "not_dead"
    assert Change.objects.filter(action="webhook.redeliver", object_id=delivery.pk).count() == 1


def test_it_does_not_follow_a_redirect_with_a_signed_body(hook: Receiver, db: Any) -> None:
    hook.script = [302]
    sub = subscribe(hook)
    delivery = webhooks.do_send_test(sub, actor=ADMIN)
    assert webhooks.deliver(delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert delivery.last_status_code == 302 and len(hook.requests) == 1


def test_it_records_an_unreachable_receiver_as_a_failed_try(db: Any) -> None:
    with receiver() as gone:
        url = gone.url
    sub, _ = webhooks.do_create_webhook({"name": "gone", "url": url, "secret": SECRET}, actor=ADMIN)
    delivery = webhooks.do_send_test(sub, actor=ADMIN)
    assert webhooks.deliver(delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert delivery.last_status_code is None and delivery.last_error.startswith("could not connect")


def test_it_sends_after_commit_and_only_what_committed(hook: Receiver, db: Any,
                                                       django_capture_on_commit_callbacks: Any) -> None:
    subscribe(hook)
    sent: list[list[int]] = []
    original = notifications.enqueue
    notifications.enqueue = sent.append  # type: ignore[assignment]
    try:
        with django_capture_on_commit_callbacks(execute=True):
            do_drain(f.fleet(backends=4).backends.first(), actor=ADMIN, reason="x", grace_seconds=60)  # type: ignore[arg-type]
    finally:
        notifications.enqueue = original  # type: ignore[method-assign]
    assert sent == [list(WebhookDelivery.objects.values_list("pk", flat=True))]


def test_it_keeps_a_payload_within_its_bound(db: Any) -> None:
    event = notifications.envelope("drift.detected", "big", {"differences": [{"key": "x" * 100}] * 200, "n": 200})
    assert len(event["data"]["differences"]) == 51
    assert event["data"]["differences"][-1] == {"truncated": 150}
    assert event["data"]["n"] == 200
    huge = notifications.envelope("drift.detected", "huge", {"differences": [{"key": "x" * 1000}] * 200, "n": 1})
    assert huge["data"] == {"truncated": True, "keys": ["differences", "n"]}
    assert len(json.dumps(huge)) < MAX_PAYLOAD_BYTES
