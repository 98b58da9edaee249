"""GET /api/v1/backends/{id}/samples/: recent probe results (for a sparkline), the current
counters and the latest transitions. Reads Redis and the HealthEvent index; writes nothing."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from steering.health import store


class SampleSerializer(serializers.Serializer):  # type: ignore[type-arg]
    time = serializers.FloatField(help_text="Unix time the result arrived.")
    ok = serializers.BooleanField()
    latency_ms = serializers.FloatField()
    result = serializers.CharField(help_text="ok, status, body, timeout, refused, tls, error or allowlist.")
    detail = serializers.CharField(help_text="HTTP status code, or the error.")


class CountersSerializer(serializers.Serializer):  # type: ignore[type-arg]
    health = serializers.CharField(help_text="The prober's view; the backend's `health` is the audited one.")
    ok_streak = serializers.IntegerField()
    fail_streak = serializers.IntegerField()
    rise = serializers.IntegerField(allow_null=True)
    fall = serializers.IntegerField(allow_null=True)
    interval_seconds = serializers.FloatField(allow_null=True)
    last_result_time = serializers.FloatField(allow_null=True)


class HealthEventSerializer(serializers.Serializer):  # type: ignore[type-arg]
    time = serializers.DateTimeField()
    from_health = serializers.CharField()
    to_health = serializers.CharField()
    evidence = serializers.DictField()


class SamplesSerializer(serializers.Serializer):  # type: ignore[type-arg]
    backend = serializers.IntegerField()
    probed = serializers.BooleanField(help_text="False when the backend's pool has no monitor.")
    health = serializers.CharField()
    counters = CountersSerializer()
    samples = SampleSerializer(many=True, help_text="Newest first.")
    events = HealthEventSerializer(many=True, help_text="Latest health transitions, newest first.")


def samples_payload(backend: Any) -> dict[str, Any]:
    from steering.redisconn import sync_client

    r = sync_client()
    state, samples = store.read_state(r, backend.pk)
    cfg = store.load_targets(r, [backend.pk]).get(backend.pk)
    events = backend.health_events.order_by("-time", "-id")[:20]
    return {
        "backend": backend.pk,
        "probed": cfg is not None,
        "health": backend.health,
        "counters": {
            "health": state.health, "ok_streak": state.ok_streak, "fail_streak": state.fail_streak,
            "rise": cfg.rise if cfg else None, "fall": cfg.fall if cfg else None,
            "interval_seconds": cfg.interval if cfg else None,
            "last_result_time": state.last_time or None,
        },
        "samples": samples,
        "events": [{"time": e.time, "from_health": e.from_health, "to_health": e.to_health, "evidence": e.evidence}
                   for e in events],
    }


class HealthSamplesMixin:
    @extend_schema(responses={200: SamplesSerializer})
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def samples(self, request: Request, pk: Any = None) -> Response:
        backend = self.get_object()  # type: ignore[attr-defined]
        return Response(SamplesSerializer(samples_payload(backend)).data)
