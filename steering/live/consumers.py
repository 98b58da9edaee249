"""The live feed: join the group, say hello with the current version, forward coalesced deltas.

Delivery is at-most-once; the browser compares versions and refetches the topology on a gap.
Deltas are buffered per connection for COALESCE_SECONDS from the first one of a window, then sent
as one message (steering.live.coalesce), so a flapping fleet costs a browser at most ~10 messages a
second. Measurement pushes (`live.observed`) are forwarded at once, as they are.

The channel layer drops messages for a full channel, and a lost *last* delta leaves no gap for the
browser to notice. So a quiet feed re-sends `hello` with the current version when the state has
moved past what this browser was told for a whole BEACON_SECONDS; the browser treats a hello
whose version differs from its own as "refetch".
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from steering.live.coalesce import coalesce, has_hole
from steering.roles import user_role
from steering.services.effects import LIVE_GROUP

logger = logging.getLogger(__name__)

COALESCE_SECONDS = 0.1
BEACON_SECONDS = 5.0
HOLE_WAIT_WINDOWS = 4  # at most this many more windows for a version that is missing (then: refetch)


@database_sync_to_async
def _role_and_version(user: Any) -> tuple[str | None, int]:
    from steering.services.audit import current_version

    return user_role(user), current_version()


@database_sync_to_async
def _current_version() -> int:
    from steering.services.audit import current_version

    return current_version()


class LiveConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffer: list[dict[str, Any]] = []
        self._flush: asyncio.Task[None] | None = None
        self._sent_version: int | None = None  # the last version this browser was told about
        self._role: str | None = None
        self._beacon: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        role, version = await _role_and_version(self.scope.get("user"))
        if role is None:
            # Authenticated session required (Origin is checked by AllowedHostsOriginValidator).
            await self.close(code=4401)
            return
        await self.channel_layer.group_add(LIVE_GROUP, self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello", "version": version, "role": role})
        self._sent_version, self._role = version, role
        self._beacon = asyncio.create_task(self._beacon_loop())

    async def disconnect(self, code: int) -> None:
        for task in (self._flush, self._beacon):
            if task is not None:
                task.cancel()
        await self.channel_layer.group_discard(LIVE_GROUP, self.channel_name)

    async def live_delta(self, event: dict[str, Any]) -> None:
        self._buffer.append(event["delta"])
        if self._flush is None:
            self._flush = asyncio.create_task(self._flush_later())

    async def live_observed(self, event: dict[str, Any]) -> None:
        await self.send_json(event["message"])

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(COALESCE_SECONDS)
            for _ in range(HOLE_WAIT_WINDOWS):
                if not has_hole(self._buffer, after=self._sent_version):
                    break
                # Several processes publish after their own commits, so version n+1 may arrive a little
                # after n+2: wait a few more windows rather than make the browser refetch everything.
                await asyncio.sleep(COALESCE_SECONDS)
            # Deltas that arrive while this send is in flight start the next window.
            buffered, self._buffer, self._flush = self._buffer, [], None
            message = coalesce(buffered, after=self._sent_version)
            if message is not None:
                self._sent_version = message["version"]
                await self.send_json(message)
        except asyncio.CancelledError:
            raise
        except Exception:  # a closed socket: the browser reconnects and resyncs
            logger.warning("could not send a live delta", exc_info=True)

    async def _beacon_loop(self) -> None:
        behind_since: int | None = None  # a version seen beyond what was sent, one beacon ago
        while True:
            await asyncio.sleep(BEACON_SECONDS)
            if self._flush is not None or self._buffer:
                behind_since = None  # deltas are flowing: they carry the version
                continue
            try:
                version = await _current_version()
                sent = self._sent_version or 0
                if version <= sent:
                    behind_since = None
                elif behind_since is not None and behind_since > sent:
                    # Still behind a whole period later: the delta is not coming, say where we are.
                    self._sent_version = version
                    behind_since = None
                    await self.send_json({"type": "hello", "version": version, "role": self._role})
                else:
                    behind_since = version
            except asyncio.CancelledError:
                raise
            except Exception:  # the database or socket is away; try again next period
                logger.warning("live version beacon failed", exc_info=True)
