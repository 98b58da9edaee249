"""The live feed: join the group, say hello with the current version, forward coalesced deltas.

Delivery is at-most-once; the browser compares versions and refetches the topology on a gap.
Deltas are buffered per connection for COALESCE_SECONDS from the first one of a window, then sent
as one message (steering.live.coalesce), so a flapping fleet costs a browser at most ~10 messages a
second. Measurement pushes (`live.observed`) are forwarded at once, as they are.

The channel layer drops messages for a full channel, and a lost *last* delta leaves no gap for the
browser to notice. So a quiet feed re-sends `hello` with the current version when the state has
moved past what this browser was told for a whole BEACON_SECONDS; the browser treats a hello
whose version differs from its own as "refetch".

Limits (the close codes the browser sees):
- 4401: no signed-in session at connect; or, within RECHECK_SECONDS, the session was signed out
  (its row deleted), the user deactivated or their password changed. 4403: the user lost every role.
- 4429: the user already has STEERING_LIVE_MAX_CONNECTIONS_PER_USER sockets open (steering.live.slots).
- 1009: a client frame over MAX_FRAME_BYTES (the feed is one-way: nothing a browser sends is read).
The Origin is checked before this consumer runs (steering.live.origin).
"""

from __future__ import annotations

import asyncio
import logging
from importlib import import_module
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user
from django.http import HttpRequest

from steering.live import slots
from steering.live.coalesce import coalesce, has_hole
from steering.redis_keys import LIVE_GROUP
from steering.roles import user_role

logger = logging.getLogger(__name__)

COALESCE_SECONDS = 0.1
BEACON_SECONDS = 5.0
HOLE_WAIT_WINDOWS = 4  # at most this many more windows for a version that is missing (then: refetch)
RECHECK_SECONDS = 2.0  # session, activity and role looked at again this often
MAX_FRAME_BYTES = 64 * 1024

CLOSE_TOO_BIG = 1009
CLOSE_SIGNED_OUT = 4401
CLOSE_ROLE_LOST = 4403
CLOSE_TOO_MANY = 4429


@database_sync_to_async
def _role_and_version(user: Any) -> tuple[str | None, int]:
    from steering.readmodels.version import current_version

    return user_role(user), current_version()


@database_sync_to_async
def _current_version() -> int:
    from steering.readmodels.version import current_version

    return current_version()


@database_sync_to_async
def _recheck(session_key: str | None, user_id: int, connection: str) -> tuple[int | None, str | None]:
    """(the close code the socket now deserves or None, the user's role now); keeps its slot alive."""
    slots.refresh(user_id, connection)
    if not session_key:
        return CLOSE_SIGNED_OUT, None
    # A fresh read of the session: the scope's copy was loaded once, at the handshake.
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(request)  # anonymous when signed out, deactivated, or the password changed
    if not user.is_authenticated or user.pk != user_id:
        return CLOSE_SIGNED_OUT, None
    role = user_role(user)
    return (CLOSE_ROLE_LOST if role is None else None), role


CLOSE_TRY_AGAIN = 1012  # "service restart": the browser reconnects (and resyncs) as after any close


class LiveConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffer: list[dict[str, Any]] = []
        self._flush: asyncio.Task[None] | None = None
        self._sent_version: int | None = None  # the last version this browser was told about
        self._role: str | None = None
        self._beacon: asyncio.Task[None] | None = None
        self._guard: asyncio.Task[None] | None = None
        self._user_id: int | None = None  # set once this socket holds one of its user's slots

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """When Redis goes away the channel layer's receive raises and would drop the TCP connection
        with no close frame; close it properly instead, so the browser reconnects once Redis is
        back and its hello carries the version to resync from."""
        import redis

        try:
            await super().__call__(scope, receive, send)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            logger.warning("live feed: Redis is away (%s); closing the socket for the browser to reconnect", exc)
            try:
                await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN})
            except Exception:  # the socket may already be gone
                pass

    async def connect(self) -> None:
        user = self.scope.get("user")
        role, version = await _role_and_version(user)
        if role is None:
            # Authenticated session required (the Origin was checked by steering.live.origin).
            await self.close(code=CLOSE_SIGNED_OUT)
            return
        if not await sync_to_async(slots.claim)(user.pk, self.channel_name,
                                                 settings.STEERING_LIVE_MAX_CONNECTIONS_PER_USER):
            logger.warning("live feed: %s already has %d sockets open; refusing another",
                           user.get_username(), settings.STEERING_LIVE_MAX_CONNECTIONS_PER_USER)
            # Accept, then close: a close before accept is an HTTP 403 to the browser, which then
            # sees code 1006, not why.
            await self.accept()
            await self.close(code=CLOSE_TOO_MANY)
            return
        self._user_id = user.pk
        await self.channel_layer.group_add(LIVE_GROUP, self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello", "version": version, "role": role})
        self._sent_version, self._role = version, role
        self._beacon = asyncio.create_task(self._beacon_loop())
        self._guard = asyncio.create_task(self._guard_loop())

    async def disconnect(self, code: int) -> None:
        for task in (self._flush, self._beacon, self._guard):
            if task is not None:
                task.cancel()
        if self._user_id is not None:
            await sync_to_async(slots.release)(self._user_id, self.channel_name)
            self._user_id = None
        await self.channel_layer.group_discard(LIVE_GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        # Enforced here as well as by the server's own cap (uvicorn --ws-max-size in runstack), so
        # it holds under any ASGI server. The text is measured in UTF-8 bytes, as it travelled.
        if text_data is not None:
            too_big = len(text_data) > MAX_FRAME_BYTES or len(text_data.encode("utf-8")) > MAX_FRAME_BYTES
        else:
            too_big = len(bytes_data or b"") > MAX_FRAME_BYTES
        if too_big:
            logger.warning("live feed: closing a socket that sent a frame over %d bytes", MAX_FRAME_BYTES)
            await self.close(code=CLOSE_TOO_BIG)

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

    async def _guard_loop(self) -> None:
        """Close the socket soon after its user signs out, is deactivated or loses their role."""
        session = self.scope.get("session")
        session_key = getattr(session, "session_key", None)
        while self._user_id is not None:
            await asyncio.sleep(RECHECK_SECONDS)
            try:
                code, role = await _recheck(session_key, self._user_id, self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception:  # the database or Redis is away; look again next period
                logger.warning("live feed: could not re-check a socket's session", exc_info=True)
                continue
            if code is not None:
                logger.info("live feed: closing a socket with %d (signed out, deactivated or role lost)", code)
                await self.close(code=code)
                return
            self._role = role  # a changed role reaches the browser with the next hello

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
