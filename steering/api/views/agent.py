"""The agent contract over HTTP: desired state, acknowledgements, observations.

GET  /api/v1/agent/desired/?layer=&pop=&after=V&wait=N   the scope's desired state (long-poll; see
                                                         steering.api.longpoll, which serves it under ASGI)
POST /api/v1/agent/ack/      {layer, pop?, instance?, version, etag?, error?}   ACK, or NACK with the error
POST /api/v1/agent/report/   {layer, pop?, instance?, ...what the data plane shows}

Agent tokens (role agent) are scoped to one PoP or to the DNS layer (steering.api.agent_scope).
Bodies over MAX_BODY_BYTES are refused with 413 before they are parsed.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from steering.api.agent_scope import LAYERS, AgentCaller, ScopeError, resolve
from steering.api.longpoll import MAX_WAIT_SECONDS
from steering.choices import DataplaneLayer
from steering.models import ApiToken, PoP
from steering.services import agent_reports
from steering.services.agents import AgentIdentity, acknowledge, record_seen
from steering.services.dataplane import do_record_dataplane_repair

MAX_BODY_BYTES = 1024 * 1024
MAX_SERVERS = 20_000
_FIGURE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# A database id (a 64-bit signed integer): larger ones are refused (400) before they reach a query,
# which SQLite answers with an OverflowError (a 500).
MAX_ID = 2**63 - 1
_BACKEND_KEY = re.compile(r"[0-9]{1,18}")  # ASCII digits only ("²".isdigit() is True, int() refuses it)
# Answers per [service, region] row of a DNS report: a Redis counter (HINCRBY) takes at most
# 2**63 - 1, and a row's answers are those of a second or of an outage's backlog, never near this.
MAX_ANSWERS_PER_ROW = 10**12


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _scope(request: Request, data: dict[str, Any], *, writing: bool) -> AgentIdentity:
    try:
        token = request.auth if isinstance(request.auth, ApiToken) else None
        return resolve(AgentCaller(request.user, token),
                       data.get("layer"), data.get("pop"), data.get("instance"), writing=writing)
    except ScopeError as exc:
        raise _Refused(Response(exc.body(), status=exc.status)) from exc


def _too_large(request: Request) -> Response | None:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY_BYTES:
        return Response({"code": "too_large", "detail": f"Bodies are limited to {MAX_BODY_BYTES} bytes."}, status=413)
    return None


class ScopeInput(serializers.Serializer):  # type: ignore[type-arg]
    layer = serializers.ChoiceField(choices=LAYERS)
    pop = serializers.CharField(max_length=50, required=False, allow_blank=True,
                                help_text="The PoP's slug; an agent token's own PoP when omitted. None for dns.")
    instance = serializers.CharField(max_length=100, required=False, default="default",
                                     help_text="Which agent of the scope (e.g. its host name), when several serve it.")


class AckInput(ScopeInput):
    version = serializers.IntegerField(min_value=0)
    etag = serializers.CharField(max_length=80, required=False, allow_blank=True, default="")
    error = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="",
                                  trim_whitespace=False, help_text="NACK: the data plane's own error. Empty: ACK.")


class _Figures(serializers.DictField):
    """One backend's measured figures: finite, non-negative numbers under short snake_case names."""

    def to_internal_value(self, data: Any) -> dict[str, float]:
        if not isinstance(data, dict) or len(data) > 32:
            raise serializers.ValidationError("An object of at most 32 named numbers.")
        out: dict[str, float] = {}
        for key, value in data.items():
            if not isinstance(key, str) or not _FIGURE_NAME.match(key) or key == "updated_at":
                raise serializers.ValidationError(f"{key!r} is not a figure name.")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise serializers.ValidationError(f"{key}: a finite number >= 0.")
            out[key] = value
        return out


class _HAProxyStatus(serializers.Serializer):  # type: ignore[type-arg]
    connected = serializers.BooleanField()
    error = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    pid = serializers.IntegerField(required=False, allow_null=True, min_value=0, default=None)
    servers = serializers.IntegerField(required=False, min_value=0, default=0)
    managed = serializers.BooleanField(required=False, default=False)
    frontends = serializers.DictField(child=serializers.CharField(max_length=300), required=False, default=dict)


class _ServerState(serializers.DictField):
    """A HAProxy server's state as the reconciler reports it: {"state": ..., "weight": ...}."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value: dict[str, Any] = super().to_internal_value(data)
        weight = value.get("weight")
        if not isinstance(value.get("state"), str) or isinstance(weight, bool) or not isinstance(weight, int):
            raise serializers.ValidationError('An object with a string "state" and an integer "weight".')
        return value


class _Repaired(serializers.Serializer):  # type: ignore[type-arg]
    proxy = serializers.CharField(max_length=200)
    server = serializers.CharField(max_length=200)
    observed = _ServerState(allow_null=True)
    desired = _ServerState(allow_null=True)
    backend_id = serializers.IntegerField(allow_null=True, required=False, default=None, min_value=0, max_value=MAX_ID)


class ReportInput(ScopeInput):
    # local
    servers = serializers.DictField(child=_Figures(), required=False, help_text="local: backend id -> figures.")
    haproxy = _HAProxyStatus(required=False)
    repaired = _Repaired(many=True, required=False)
    # anycast
    observed = serializers.ListField(child=serializers.CharField(max_length=64), max_length=1000, required=False)
    session = serializers.ChoiceField(["up", "down"], required=False, allow_null=True)
    # dns
    answers = serializers.ListField(child=serializers.ListField(child=serializers.IntegerField(
                                        min_value=0, max_value=MAX_ANSWERS_PER_ROW), min_length=3, max_length=3),
                                    max_length=10_000, required=False,
                                    help_text="dns: [service id, region id, answers] since the last report.")

    def validate_servers(self, value: dict[str, dict[str, float]]) -> dict[int, dict[str, float]]:
        if len(value) > MAX_SERVERS:
            raise serializers.ValidationError(f"At most {MAX_SERVERS} backends per report.")
        out: dict[int, dict[str, float]] = {}
        for key, figures in value.items():
            if not _BACKEND_KEY.fullmatch(str(key)):
                raise serializers.ValidationError(f"{key!r} is not a backend id.")
            out[int(key)] = figures
        return out


class AgentView(APIView):
    # Scope is checked per request (steering.api.agent_scope); authentication is all this asks.
    permission_classes = [permissions.IsAuthenticated]

    @staticmethod
    def validated(request: Request, serializer: type[ScopeInput]) -> tuple[dict[str, Any], AgentIdentity]:
        """An agent's post: its body valid (400 otherwise), and its scope the caller's (403)."""
        data = serializer(data=request.data)
        data.is_valid(raise_exception=True)
        return data.validated_data, _scope(request, data.validated_data, writing=True)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, _Refused):
            return exc.response
        return super().handle_exception(exc)


class DesiredView(AgentView):
    """Served by steering.api.longpoll under ASGI; this is the same answer for any other server
    (and the schema), with `wait` honoured by a short sleep loop."""

    @extend_schema(
        parameters=[OpenApiParameter("layer", str, enum=LAYERS, required=True),
                    OpenApiParameter("pop", str, description="PoP slug (an agent token's own when omitted)"),
                    OpenApiParameter("after", int, description="The version the agent has: answer when it moves"),
                    OpenApiParameter("wait", int, description="Seconds to wait for a newer version (max 60)"),
                    OpenApiParameter("instance", str, description="Which agent of the scope")],
        responses={200: inline_serializer("DesiredState", {
            "layer": serializers.CharField(), "pop": serializers.CharField(allow_null=True),
            "version": serializers.IntegerField(), "etag": serializers.CharField(), "spec": serializers.DictField()}),
            304: OpenApiResponse(description="Nothing newer (X-Steering-Version: the version to acknowledge)")},
        summary="A data plane's desired state, versioned (long-poll)",
    )
    def get(self, request: Request) -> Response:
        from steering.dataplane.desired import desired_document
        from steering.readmodels.version import current_version

        identity = _scope(request, request.query_params.dict(), writing=False)
        if getattr(request.auth, "is_agent", False):
            record_seen(identity)
        try:
            after = int(request.query_params.get("after", "")) if request.query_params.get("after") else None
            wait = int(request.query_params.get("wait") or 0)
        except ValueError:
            return Response({"code": "invalid", "detail": "Invalid input.",
                             "errors": {"after": ["Whole numbers."], "wait": ["Whole numbers."]}}, status=400)
        # The same bounds as the ASGI long-poll (steering.api.longpoll), which serves this in production.
        errors = {name: [f"Between 0 and {high}." if high else "0 or more."]
                  for name, value, high in (("after", after, None), ("wait", wait, MAX_WAIT_SECONDS))
                  if value is not None and (value < 0 or (high is not None and value > high))}
        if errors:
            return Response({"code": "invalid", "detail": "Invalid input.", "errors": errors}, status=400)
        running = request.headers.get("If-None-Match")
        deadline = time.monotonic() + (wait if after is not None else 0)
        while True:
            # Read afresh each time (the PoP's own fields are part of its desired state).
            pop = PoP.objects.get(pk=identity.pop.pk) if identity.pop is not None else None
            document = desired_document(identity.layer, pop)
            if after is None or document["version"] > after or (running is not None and document["etag"] != running):
                break
            if time.monotonic() >= deadline:
                return Response(status=304, headers={"X-Steering-Version": str(after)})
            while current_version() <= after and time.monotonic() < deadline:
                time.sleep(0.05)
        headers = {"ETag": document["etag"], "X-Steering-Version": str(document["version"]), "Cache-Control": "no-store"}
        if running == document["etag"]:
            return Response(status=304, headers=headers)
        return Response(document, headers=headers)


class AckView(AgentView):
    @extend_schema(request=AckInput, responses={200: inline_serializer("AckResult", {
        "accepted": serializers.BooleanField(), "applied_version": serializers.IntegerField(),
        "detail": serializers.CharField()})}, summary="ACK (applied) or NACK (refused, with the error) a version")
    def post(self, request: Request) -> Response:
        if (refused := _too_large(request)) is not None:
            return refused
        v, identity = self.validated(request, AckInput)
        with _measurement("seen", []):
            record_seen(identity)
        return Response(acknowledge(identity, version=v["version"], etag=v["etag"], error=v["error"]).as_dict())


class ReportView(AgentView):
    @extend_schema(request=ReportInput, responses={200: inline_serializer("ReportResult", {
        "stored": serializers.DictField(),
        "skipped": serializers.ListField(child=serializers.CharField(), required=False,
                                         help_text="Measurements dropped because Redis is not answering")})}, summary="What a data plane shows: figures, states, announcements, answers")
    def post(self, request: Request) -> Response:
        if (refused := _too_large(request)) is not None:
            return refused
        v, identity = self.validated(request, ReportInput)
        wrong = self._wrong_layer_fields(identity.layer, v)
        if wrong:
            return Response({"code": "invalid", "detail": "Invalid input.",
                             "errors": {f: [f"Not part of a {identity.layer} report."] for f in wrong}}, status=400)
        skipped: list[str] = []
        with _measurement("seen", skipped):
            record_seen(identity)
        stored: dict[str, Any] = {}
        if identity.layer == DataplaneLayer.LOCAL:
            assert identity.pop is not None
            named = set(v.get("servers", {})) | {r["backend_id"] for r in v.get("repaired", []) if r["backend_id"]}
            foreign = agent_reports.foreign_backends(identity.pop, named)
            if foreign:
                return Response({"code": "out_of_scope", "detail":
                                 f"Backends {foreign[:20]} are not in PoP {identity.pop.slug}; nothing was stored."},
                                status=403)
            with _measurement("servers", skipped):
                agent_reports.store_local_figures(v.get("servers", {}))
                stored["servers"] = len(v.get("servers", {}))
            if any(f.get("observed_down") for f in v.get("servers", {}).values()):
                # HAProxy took a server out on live traffic: judge it now, not at the next tick.
                from steering.tasks.outliers import outlier_tick

                transaction.on_commit(lambda: outlier_tick.apply_async(expires=5))
            held = [bid for bid, f in v.get("servers", {}).items() if f.get("observe_held")]
            if held:
                # The agent put back servers HAProxy's observe took out beyond their pool's bound:
                # the operator is told (outlier panic, audited once).
                from steering.services.outliers import record_observe_held

                with _measurement("observe_held", skipped):
                    stored["observe_held"] = record_observe_held(identity.pop, held)
            if "haproxy" in v:
                with _measurement("haproxy", skipped):
                    agent_reports.store_haproxy_status(identity.pop, v["haproxy"], instance=identity.instance)
            if v.get("repaired"):
                changes = do_record_dataplane_repair(identity.pop.slug, [_Repair(**r) for r in v["repaired"]])
                stored["repaired"] = len(changes)
        elif identity.layer == DataplaneLayer.ANYCAST:
            assert identity.pop is not None
            from steering.dataplane.exabgp.desired import normalise_prefix
            from steering.services.announcements import record_agent_report

            try:
                observed = [normalise_prefix(p) for p in v.get("observed", [])]
            except ValueError:
                return Response({"code": "invalid", "detail": "Invalid input.",
                                 "errors": {"observed": ["Each item must be an IP prefix."]}}, status=400)
            with _measurement("observed", skipped), transaction.atomic():
                stored["observed"] = record_agent_report(identity.pop, observed, session=v.get("session"))["observed"]
        else:
            with _measurement("answers", skipped):
                stored["answers"] = agent_reports.store_dns_answers(tuple(a) for a in v.get("answers", []))
        return Response({"stored": stored, **({"skipped": skipped} if skipped else {})})

    @staticmethod
    def _wrong_layer_fields(layer: str, v: dict[str, Any]) -> list[str]:
        allowed = {DataplaneLayer.LOCAL: {"servers", "haproxy", "repaired"},
                   DataplaneLayer.ANYCAST: {"observed", "session"},
                   DataplaneLayer.DNS: {"answers"}}[DataplaneLayer(layer)]
        present = {"servers", "haproxy", "repaired", "observed", "session", "answers"} & set(v)
        return sorted(present - allowed)


@contextmanager
def _measurement(what: str, skipped: list[str]) -> Iterator[None]:
    """A measurement kept only in Redis (figures, statuses, answer counts, who was seen): with Redis
    away it is dropped, not the report. The next report, a second later, carries the counters
    again; the report's writes to the database (repairs) still happen and are audited."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError):
        skipped.append(f"{what}: Redis is not answering")


class _Repair:
    """One repaired server as steering.services.dataplane expects it."""

    def __init__(self, proxy: str, server: str, observed: dict[str, Any] | None, desired: dict[str, Any] | None,
                 backend_id: int | None = None) -> None:
        self.proxy, self.server, self.observed, self.desired, self.backend_id = proxy, server, observed, desired, backend_id
