"""`GET /api/v1/operations/<id>/?wait=N` under ASGI: the wait holds no thread and no DB connection.

Django answers the request twice, each time at once: first with `wait` taken out (which does the
authentication, the permission, the 404 and the body), and, when that answer shows an operation
still running, again once it has ended or `wait` ran out. In between the request is an asyncio
future in `OperationEnds`: one task per process asks the database which of *all* the awaited
operations have ended, in one query, whenever the state version moves (every operation's step and
end is a Change, so it moves the version; steering.api.longpoll.VersionWatcher follows it) and
every RESYNC_SECONDS as a safety net. A thousand waiters cost a thousand futures, not a thousand
threads, so a drain posted meanwhile is answered as if nobody waited.

Under WSGI (or Django's test client) the view's own polling loop serves `wait` instead.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from asgiref.sync import sync_to_async
from django.conf import settings

from steering.api.longpoll import RESYNC_SECONDS, Receive, Scope, Send, close_db, watcher_for_running_loop
from steering.choices import OPERATION_FINAL_STATES

PATH = re.compile(r"^/api/v1/operations/(?P<id>[0-9]{1,18})/$")


def _ended(ids: Iterable[int]) -> set[int]:
    from steering.models import Operation

    try:
        return set(Operation.objects.filter(pk__in=list(ids), status__in=OPERATION_FINAL_STATES)
                   .values_list("pk", flat=True))
    finally:
        close_db()


class OperationEnds:
    """Futures for operations' ends, resolved by one checker for the whole event loop."""

    def __init__(self) -> None:
        self.waiting: dict[int, set[asyncio.Future[None]]] = {}
        self._checker: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()

    async def wait(self, operation_id: int, timeout: float) -> None:
        """Returns when the operation has ended, or after `timeout` seconds."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(operation_id, set()).add(done)
        # It may have ended between Django's first answer and now: check at once, not at the next version.
        self._poke.set()
        if self._checker is None or self._checker.done():
            self._checker = asyncio.get_running_loop().create_task(self._check(), name="steering-operation-ends")
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            pass
        finally:
            futures = self.waiting.get(operation_id)
            if futures is not None:
                futures.discard(done)
                if not futures:
                    del self.waiting[operation_id]

    async def _check(self) -> None:
        watcher = watcher_for_running_loop()
        seen = watcher.latest
        while self.waiting:
            self._poke.clear()
            try:
                ended = await sync_to_async(_ended, thread_sensitive=False)(list(self.waiting))
            except Exception:  # the database away: waiters run out their time and ask Django again
                ended = set()
            for operation_id in ended:
                for done in self.waiting.pop(operation_id, set()):
                    if not done.done():
                        done.set_result(None)
            if not self.waiting:
                break
            moved = asyncio.ensure_future(watcher.wait_beyond(seen, RESYNC_SECONDS))
            poked = asyncio.ensure_future(self._poke.wait())
            await asyncio.wait([moved, poked], return_when=asyncio.FIRST_COMPLETED)
            for task in (moved, poked):
                task.cancel()
            seen = max(seen, watcher.latest)


class _Captured:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"]) if self.messages else 500

    def json(self) -> Any:
        body = b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")
        try:
            return json.loads(body)
        except ValueError:
            return None


def _wait_param(scope: Scope) -> tuple[float | None, bytes]:
    """The valid `wait` (None when absent or invalid: Django then answers, and refuses bad values
    with a 400) and the query string without it."""
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    waits = [v for k, v in pairs if k == "wait"]
    rest = urlencode([(k, v) for k, v in pairs if k != "wait"]).encode("latin-1")
    if len(waits) != 1:
        return None, rest
    try:
        wait = float(waits[0])
    except ValueError:
        return None, rest
    if not 0 <= wait <= settings.STEERING_MAX_WAIT_SECONDS:
        return None, rest
    return wait, rest


class OperationWaitApp:
    """ASGI: the operation long-poll; everything else goes to `inner`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._ends: OperationEnds | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = PATH.match(scope.get("path", "")) if scope["type"] == "http" and scope["method"] == "GET" else None
        wait, rest = _wait_param(scope) if match is not None else (None, b"")
        if match is None or wait is None:
            await self.inner(scope, receive, send)
            return
        asked = {**scope, "query_string": rest}
        first = await self._ask_django(asked)
        body = first.json()
        running = first.status == 200 and isinstance(body, dict) and body.get("status") not in OPERATION_FINAL_STATES
        if not running or wait <= 0:
            await _replay(first, send)
            return
        # Hold nothing of the first answer while waiting: a thousand parked copies of an operation's
        # body are objects the garbage collector walks on every full pass.
        del first, body
        if self._ends is None:
            self._ends = OperationEnds()
        waiting = asyncio.ensure_future(self._ends.wait(int(match["id"]), wait))
        gone = asyncio.ensure_future(_disconnect(receive))
        await asyncio.wait([waiting, gone], return_when=asyncio.FIRST_COMPLETED)
        if gone.done():  # the client went away: stop waiting for it
            waiting.cancel()
            return
        gone.cancel()
        await _replay(await self._ask_django(asked), send)

    async def _ask_django(self, scope: Scope) -> _Captured:
        captured = _Captured()
        sent_body = False
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await never  # Django listens for a disconnect while it answers; this one never comes
            return {"type": "http.disconnect"}

        try:
            await self.inner(scope, receive, captured.send)
        finally:
            never.cancel()
        return captured


async def _replay(captured: _Captured, send: Send) -> None:
    for message in captured.messages:
        await send(message)


async def _disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
