"""Webhooks: subscriptions (admins: a URL may itself be a credential, a Slack one is), their
delivery log and the dead letters (operators read them and send them again).

The secret is write-only: given on create or update, or generated on create and shown once in
that answer; no read ever returns it.
"""

from __future__ import annotations

from typing import Any

import django_filters as df
from django.utils.cache import get_conditional_response
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from steering.api.request_context import actor_for, change_reason, expected_revision
from steering.api.serializers import StrictMixin
from steering.choices import DeliveryStatus, Role, WebhookEvent
from steering.models import WebhookDelivery, WebhookSubscription
from steering.services import webhooks

_READ_ONLY = ("id", "revision", "created_by", "created_at", "updated_at")


class WebhookSerializer(StrictMixin, serializers.ModelSerializer):  # type: ignore[type-arg]
    events = serializers.ListField(child=serializers.ChoiceField(choices=WebhookEvent.choices), required=False,
                                   help_text="Event types to send (empty: all).")
    regions = serializers.ListField(child=serializers.SlugField(), required=False,
                                    help_text="Region slugs (empty: all). Events of no region reach every subscription.")
    services = serializers.ListField(child=serializers.SlugField(), required=False,
                                     help_text="Service slugs (empty: all). Events of no service reach every subscription.")
    secret = serializers.CharField(write_only=True, required=False, min_length=webhooks.MIN_SECRET_CHARS, max_length=200,
                                   help_text="Signs each body (HMAC-SHA256). Write-only; left out on create, one is "
                                             "generated and shown once.")
    url = serializers.URLField(max_length=2000, help_text="http:// or https://: where the events are POSTed.")

    class Meta:
        model = WebhookSubscription
        fields = [*_READ_ONLY, "name", "url", "secret", "format", "events", "regions", "services", "enabled"]
        read_only_fields = _READ_ONLY


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(read_only=True, allow_null=True,
                                   help_text="The generated secret: shown only now (null when you gave one).")


class DeliverySerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    subscription_name = serializers.CharField(source="subscription.name", read_only=True)
    summary = serializers.SerializerMethodField()

    class Meta:
        model = WebhookDelivery
        fields = ["id", "subscription", "subscription_name", "event_type", "event_id", "summary", "format", "status",
                  "attempts", "next_attempt_at", "last_attempt_at", "last_status_code", "last_error", "delivered_at",
                  "created_at", "payload"]
        read_only_fields = fields

    def get_summary(self, obj: WebhookDelivery) -> str:
        return str(obj.payload.get("summary", "")) if isinstance(obj.payload, dict) else ""


class DeliveryFilter(df.FilterSet):
    status = df.MultipleChoiceFilter(choices=DeliveryStatus.choices,
                                     help_text="Repeat for several; ?status=dead is the dead-letter list.")
    event_type = df.ChoiceFilter(choices=WebhookEvent.choices)
    subscription = df.ModelChoiceFilter(queryset=WebhookSubscription.objects.all())

    class Meta:
        model = WebhookDelivery
        fields = ["status", "event_type", "subscription", "event_id"]


class WebhookViewSet(viewsets.ModelViewSet):  # type: ignore[type-arg]
    """Admin only, reads included; the delivery log of one subscription is an operator's read."""

    queryset = WebhookSubscription.objects.all()
    serializer_class = WebhookSerializer
    filterset_fields = ["name", "format", "enabled"]
    search_fields = ["name"]
    ordering_fields = ["name", "id"]
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]
    required_roles = {"list": Role.ADMIN, "retrieve": Role.ADMIN, "create": Role.ADMIN, "update": Role.ADMIN,
                      "partial_update": Role.ADMIN, "destroy": Role.ADMIN, "test": Role.ADMIN,
                      "deliveries": Role.OPERATOR}

    def _revision(self, request: Request, sub: WebhookSubscription) -> int | None:
        return expected_revision(request, "webhooksubscription", sub.pk)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        sub = self.get_object()
        not_modified = get_conditional_response(request._request, etag=sub.etag)
        if not_modified is not None and not_modified.status_code == 304:
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": sub.etag})
        return Response(WebhookSerializer(sub).data, headers={"ETag": sub.etag})

    @extend_schema(request=WebhookSerializer, responses={201: WebhookCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = WebhookSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        sub, generated = webhooks.do_create_webhook(data.validated_data, actor=actor_for(request),
                                                    reason=change_reason(request))
        body = dict(WebhookSerializer(sub).data)
        body["secret"] = generated
        return Response(body, status=status.HTTP_201_CREATED, headers={"ETag": sub.etag})

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        sub = self.get_object()
        data = WebhookSerializer(sub, data=request.data, partial=kwargs.get("partial", False))
        data.is_valid(raise_exception=True)
        sub = webhooks.do_update_webhook(sub, data.validated_data, actor=actor_for(request),
                                         reason=change_reason(request), expected_revision=self._revision(request, sub))
        return Response(WebhookSerializer(sub).data, headers={"ETag": sub.etag})

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        sub = self.get_object()
        webhooks.do_delete_webhook(sub, actor=actor_for(request), reason=change_reason(request),
                                   expected_revision=self._revision(request, sub))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={202: DeliverySerializer})
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: Any = None) -> Response:
        """Send a `webhook.test` event to this subscription now (whatever its filters); follow it in its deliveries."""
        delivery = webhooks.do_send_test(self.get_object(), actor=actor_for(request))
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: DeliverySerializer(many=True)}, filters=False)
    @action(detail=True, methods=["get"])
    def deliveries(self, request: Request, pk: Any = None) -> Response:
        """This subscription's delivery log, newest first (paginated)."""
        sub = self.get_object()
        rows = WebhookDelivery.objects.filter(subscription=sub).select_related("subscription").order_by("-created_at", "-id")
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)


class WebhookDeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Every delivery, newest first; `?status=dead` lists the dead letters. Operators read and redeliver."""

    queryset = WebhookDelivery.objects.select_related("subscription")
    serializer_class = DeliverySerializer
    filterset_class = DeliveryFilter
    ordering_fields = ["created_at", "id", "status", "next_attempt_at"]
    required_roles = {"list": Role.OPERATOR, "retrieve": Role.OPERATOR, "redeliver": Role.OPERATOR}

    @extend_schema(request=None, responses={202: DeliverySerializer})
    @action(detail=True, methods=["post"])
    def redeliver(self, request: Request, pk: Any = None) -> Response:
        """Send a dead letter (or a failed delivery waiting for its next try) again now."""
        delivery = webhooks.do_redeliver(self.get_object(), actor=actor_for(request), reason=change_reason(request))
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

