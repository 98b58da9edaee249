"""The live feed: join the group, say hello with the current version, forward deltas.

Delivery is at-most-once; the browser compares versions and refetches the topology on a gap.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from steering.roles import user_role
from steering.services.effects import LIVE_GROUP


@database_sync_to_async
def _role_and_version(user: Any) -> tuple[str | None, int]:
    from steering.services.audit import current_version

    return user_role(user), current_version()


class LiveConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        role, version = await _role_and_version(self.scope.get("user"))
        if role is None:
            # Authenticated session required (Origin is checked by AllowedHostsOriginValidator).
            await self.close(code=4401)
            return
        await self.channel_layer.group_add(LIVE_GROUP, self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello", "version": version, "role": role})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(LIVE_GROUP, self.channel_name)

    async def live_delta(self, event: dict[str, Any]) -> None:
        await self.send_json(event["delta"])
