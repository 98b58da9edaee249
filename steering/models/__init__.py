"""Models, one aggregate per module."""

from steering.models.audit import Change
from steering.models.base import StateVersion
from steering.models.dataplane import DataplaneState
from steering.models.freeze import ChangeFreeze
from steering.models.health import HealthEvent
from steering.models.idempotency import IdempotencyRecord
from steering.models.monitor import Monitor
from steering.models.operations import Operation
from steering.models.pools import Backend, Pool
from steering.models.safety import SafetyRule
from steering.models.tokens import ApiToken
from steering.models.topology import VIP, AnycastPrefix, ClientNetwork, PoP, Region, Service
from steering.models.webhooks import NotificationCursor, WebhookDelivery, WebhookSubscription

__all__ = [
    "VIP",
    "AnycastPrefix",
    "ApiToken",
    "Backend",
    "Change",
    "ChangeFreeze",
    "DataplaneState",
    "ClientNetwork",
    "HealthEvent",
    "IdempotencyRecord",
    "Monitor",
    "NotificationCursor",
    "Operation",
    "PoP",
    "Pool",
    "Region",
    "SafetyRule",
    "Service",
    "StateVersion",
    "WebhookDelivery",
    "WebhookSubscription",
]
