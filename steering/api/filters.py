"""Filters for list endpoints (django-filter), and the filter backends that apply them to lists only."""

from __future__ import annotations

from typing import Any

import django_filters as df
from django.db.models import Q, QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import filters as drf_filters

from steering.choices import LEGACY_CHANGE_ACTIONS, AdminState, ChangeAction, ChangeSource, Health, OperationStatus
from steering.models import VIP, Backend, Change, Operation, Pool, PoP, Region, Service


class PoolFilter(df.FilterSet):
    # ModelChoiceFilter, not NumberFilter: an unknown or absurd id is a 400, never a 500.
    region = df.ModelChoiceFilter(field_name="pop__region", queryset=Region.objects.all())
    pop_slug = df.CharFilter(field_name="pop__slug")

    class Meta:
        model = Pool
        fields = ["pop", "service", "slug", "mode", "in_panic", "monitor", "backup_pool"]


class BackendFilter(df.FilterSet):
    pop = df.ModelChoiceFilter(field_name="pool__pop", queryset=PoP.objects.all())
    region = df.ModelChoiceFilter(field_name="pool__pop__region", queryset=Region.objects.all())
    service = df.ModelChoiceFilter(field_name="pool__service", queryset=Service.objects.all())
    admin_state = df.MultipleChoiceFilter(choices=AdminState.choices)
    health = df.MultipleChoiceFilter(choices=Health.choices)

    class Meta:
        model = Backend
        fields = ["pool", "name", "address", "port", "backup", "version"]


class OperationFilter(df.FilterSet):
    status = df.MultipleChoiceFilter(choices=OperationStatus.choices, help_text="Repeat for several: ?status=running&status=paused")
    since = df.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = df.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    window = df.BooleanFilter(method="_window", help_text=(
        "true: maintenance windows still open (scheduled, or with an end not yet reached): the calendar"))

    class Meta:
        model = Operation
        fields = ["kind", "target_type", "target_id", "actor_name", "source"]

    def _window(self, queryset: Any, name: str, value: bool | None) -> Any:
        if value is None:
            return queryset
        open_window = Q(status="scheduled") | Q(expires_at__isnull=False, expired_at__isnull=True)
        return queryset.filter(open_window).exclude(status__in=["aborted", "failed"]) if value else \
            queryset.exclude(open_window)


class ChangeFilter(df.FilterSet):
    actor = df.CharFilter(field_name="actor_name")
    # The audit's own table of actions (and the names old rows carry): an unknown one is a 400.
    action = df.ChoiceFilter(field_name="action", choices=[*ChangeAction.choices,
                                                           *((name, name) for name in sorted(LEGACY_CHANGE_ACTIONS))])
    action_prefix = df.CharFilter(field_name="action", lookup_expr="startswith",
                                  help_text="e.g. 'backend.' for every backend action")
    source = df.ChoiceFilter(choices=ChangeSource.choices)
    since = df.IsoDateTimeFilter(field_name="time", lookup_expr="gte")
    until = df.IsoDateTimeFilter(field_name="time", lookup_expr="lt")
    # "History of X" includes changes where X is the related object (a pool's backends).
    involving_type = df.CharFilter(method="filter_involving_type")
    involving_id = df.NumberFilter(method="filter_noop")

    class Meta:
        model = Change
        fields = ["object_type", "object_id", "related_type", "related_id", "request_id", "operation_id", "forced"]

    def filter_noop(self, queryset, name, value):  # type: ignore[no-untyped-def]
        if not self.data.get("involving_type"):
            from rest_framework.exceptions import ValidationError

            raise ValidationError({"involving_id": ["Give involving_type too (e.g. pool)."]})
        return queryset

    def filter_involving_type(self, queryset, name, value):  # type: ignore[no-untyped-def]
        from django.db.models import Q

        ident = self.data.get("involving_id")
        obj_q = Q(object_type=value)
        rel_q = Q(related_type=value)
        if ident not in (None, ""):
            try:
                ident_int = int(ident)
            except (TypeError, ValueError):
                return queryset.none()
            obj_q &= Q(object_id=ident_int)
            rel_q &= Q(related_id=ident_int)
        return queryset.filter(obj_q | rel_q)


class VIPFilter(df.FilterSet):
    # A CharFilter that validates: an address column compared with garbage is a 400, not a 500.
    address = df.CharFilter(method="filter_address")

    class Meta:
        model = VIP
        fields = ["service", "region", "enabled"]

    def filter_address(self, queryset, name, value):  # type: ignore[no-untyped-def]
        import ipaddress

        from rest_framework.exceptions import ValidationError

        try:
            return queryset.filter(address=ipaddress.ip_address(value).compressed)
        except ValueError:
            raise ValidationError({"address": [f"{value!r} is not an IPv4 or IPv6 address."]}) from None


class _ListsOnly:
    """DRF filters every queryset it reads, the one a detail view looks its object up in too: a
    `GET /backends/5/` (or a drain of it) built and validated a whole FilterSet form for nothing,
    several hundred objects in reference cycles per request, which the garbage collector then
    walked while a thousand `?wait=` long-polls were parked. A filter narrows a list; on one
    object it only turned a stray query parameter into a 404."""

    def filter_queryset(self, request: Any, queryset: QuerySet[Any], view: Any) -> QuerySet[Any]:
        if getattr(view, "detail", False):
            return queryset
        return super().filter_queryset(request, queryset, view)  # type: ignore[misc, no-any-return]


class ListFilterBackend(_ListsOnly, DjangoFilterBackend):
    pass


class ListOrderingFilter(_ListsOnly, drf_filters.OrderingFilter):
    pass


class ListSearchFilter(_ListsOnly, drf_filters.SearchFilter):
    pass
