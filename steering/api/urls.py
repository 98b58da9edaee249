from django.urls import include, path
from rest_framework.routers import DefaultRouter

from steering.api import schema  # noqa: F401  (registers the OpenAPI auth extension before schema generation)
from steering.api.views.agent import AckView, DesiredView, ReportView
from steering.api.views.anycast import AnycastView
from steering.api.views.changes import ChangeViewSet
from steering.api.views.dataplane import BackendStatsView, DataplanesView
from steering.api.views.dns import DnsAnswersView
from steering.api.views.fleet import FleetApplyView, FleetDriftView, FleetExportView, FleetPlanView, FleetSchemaView
from steering.api.views.freeze import FreezeView
from steering.api.views.live import LiveDeltasView
from steering.api.views.operations import OperationViewSet
from steering.api.views.resources import (
    AnycastPrefixViewSet,
    BackendViewSet,
    ClientNetworkViewSet,
    MonitorViewSet,
    PoolViewSet,
    PoPViewSet,
    RegionViewSet,
    SafetyRuleViewSet,
    ServiceViewSet,
    VIPViewSet,
)
from steering.api.views.system import MeView, StatesView, TopologyView
from steering.api.views.tokens import TokenViewSet
from steering.api.views.webhooks import WebhookDeliveryViewSet, WebhookViewSet

router = DefaultRouter()
router.register("regions", RegionViewSet)
router.register("pops", PoPViewSet)
router.register("services", ServiceViewSet)
router.register("vips", VIPViewSet)
router.register("prefixes", AnycastPrefixViewSet)
router.register("client-networks", ClientNetworkViewSet)
router.register("monitors", MonitorViewSet)
router.register("pools", PoolViewSet)
router.register("backends", BackendViewSet)
router.register("operations", OperationViewSet)
router.register("changes", ChangeViewSet)
router.register("tokens", TokenViewSet)
router.register("safety-rules", SafetyRuleViewSet)
router.register("webhooks", WebhookViewSet)
router.register("webhook-deliveries", WebhookDeliveryViewSet)

urlpatterns = [
    path("topology/", TopologyView.as_view(), name="topology"),
    path("me/", MeView.as_view(), name="me"),
    path("freeze/", FreezeView.as_view(), name="freeze"),
    path("states/", StatesView.as_view(), name="states"),
    path("live/deltas/", LiveDeltasView.as_view(), name="live-deltas"),
    path("stats/backends/", BackendStatsView.as_view(), name="backend-stats"),
    path("dataplanes/", DataplanesView.as_view(), name="dataplanes"),
    path("dns/answers/", DnsAnswersView.as_view(), name="dns-answers"),
    path("anycast/", AnycastView.as_view(), name="anycast"),
    path("agent/desired/", DesiredView.as_view(), name="agent-desired"),
    path("agent/ack/", AckView.as_view(), name="agent-ack"),
    path("agent/report/", ReportView.as_view(), name="agent-report"),
    path("fleet/export/", FleetExportView.as_view(), name="fleet-export"),
    path("fleet/schema/", FleetSchemaView.as_view(), name="fleet-schema"),
    path("fleet/plan/", FleetPlanView.as_view(), name="fleet-plan"),
    path("fleet/apply/", FleetApplyView.as_view(), name="fleet-apply"),
    path("fleet/drift/", FleetDriftView.as_view(), name="fleet-drift"),
    path("", include(router.urls)),
]
