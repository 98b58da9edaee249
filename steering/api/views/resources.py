"""Thin viewsets for topology resources: queryset, serializer, filters, and the actions mixins."""

from __future__ import annotations

from steering.api import serializers as s
from steering.api.filters import BackendFilter, PoolFilter, VIPFilter
from steering.api.views.actions import OPERATOR_ACTIONS, AnycastActionMixin, TargetActionsMixin, WeightActionMixin
from steering.api.views.base import AuditedModelViewSet
from steering.api.views.health import HealthSamplesMixin
from steering.choices import Role
from steering.models import VIP, AnycastPrefix, Backend, ClientNetwork, Monitor, Pool, PoP, Region, SafetyRule, Service


class RegionViewSet(TargetActionsMixin, AuditedModelViewSet):
    queryset = Region.objects.all()
    serializer_class = s.RegionSerializer
    filterset_fields = ["slug", "admin_state"]
    search_fields = ["slug", "name"]
    ordering_fields = ["slug", "name", "id"]


class PoPViewSet(AnycastActionMixin, TargetActionsMixin, AuditedModelViewSet):
    queryset = PoP.objects.all()
    serializer_class = s.PoPSerializer
    filterset_fields = ["region", "slug", "admin_state", "announce"]
    search_fields = ["slug", "name", "city"]
    ordering_fields = ["slug", "name", "city", "id"]


class ServiceViewSet(AuditedModelViewSet):
    queryset = Service.objects.all()
    serializer_class = s.ServiceSerializer
    filterset_fields = ["slug", "fqdn", "protocol", "dns_policy", "anycast_prefix"]
    search_fields = ["slug", "fqdn"]
    ordering_fields = ["slug", "fqdn", "id"]


class VIPViewSet(AuditedModelViewSet):
    queryset = VIP.objects.all()
    serializer_class = s.VIPSerializer
    filterset_class = VIPFilter
    ordering_fields = ["priority", "weight", "id"]


class AnycastPrefixViewSet(AuditedModelViewSet):
    queryset = AnycastPrefix.objects.all()
    serializer_class = s.AnycastPrefixSerializer
    filterset_fields = ["prefix"]
    search_fields = ["prefix", "description"]
    ordering_fields = ["prefix", "id"]


class ClientNetworkViewSet(AuditedModelViewSet):
    queryset = ClientNetwork.objects.all()
    serializer_class = s.ClientNetworkSerializer
    filterset_fields = ["region", "cidr"]
    search_fields = ["cidr", "description"]
    ordering_fields = ["cidr", "id"]


class MonitorViewSet(AuditedModelViewSet):
    queryset = Monitor.objects.all()
    serializer_class = s.MonitorSerializer
    filterset_fields = ["slug", "kind"]
    ordering_fields = ["slug", "id"]


class PoolViewSet(TargetActionsMixin, AuditedModelViewSet):
    queryset = Pool.objects.select_related("pop")
    serializer_class = s.PoolSerializer
    filterset_class = PoolFilter
    search_fields = ["slug", "pop__slug"]
    ordering_fields = ["slug", "rule_priority", "id"]


class BackendViewSet(HealthSamplesMixin, WeightActionMixin, TargetActionsMixin, AuditedModelViewSet):
    required_roles = {**OPERATOR_ACTIONS, "samples": Role.VIEWER}
    queryset = Backend.objects.select_related("pool__pop")
    serializer_class = s.BackendSerializer
    filterset_class = BackendFilter
    search_fields = ["name", "address", "pool__slug", "pool__pop__slug"]
    ordering_fields = ["name", "weight", "admin_state", "health", "id"]


class SafetyRuleViewSet(AuditedModelViewSet):
    """Safety rules: anyone reads them, an admin changes them (audited like any topology edit)."""

    queryset = SafetyRule.objects.all()
    serializer_class = s.SafetyRuleSerializer
    filterset_fields = ["slug", "kind", "enabled", "service", "prefix", "pool"]
    search_fields = ["slug", "description"]
    ordering_fields = ["slug", "kind", "id"]
