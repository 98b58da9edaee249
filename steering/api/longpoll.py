"""Long-polls that hold neither a thread nor a database connection while they wait.

GET /api/v1/agent/desired/?layer=&pop=&after=V&wait=N is served here, in front of Django's
(synchronous) middleware stack, by a small ASGI app: it authenticates and builds the answer in
short thread hops (on DB_THREADS threads of its own, each keeping one connection) and waits on an asyncio event that one
per-process watcher sets when the state version moves. The watcher follows Redis pub/sub
(steering.redis_keys.STATE_VERSION_CHANNEL) and, as a safety net for a missed message or Redis
away, reads the version from the database every RESYNC_SECONDS.

Answers:
- 200 {"layer", "pop", "version", "etag", "spec"} (ETag header: the spec's digest);
- 304 with `X-Steering-Version: V` when the agent's `If-None-Match` etag is still the spec of
  version V (acknowledge V, nothing to apply), or when nothing moved past `after` within `wait`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qs

import orjson
from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

PATH = "/api/v1/agent/desired/"
RESYNC_SECONDS = 2.0
# An agent asks again as soon as it is answered: its token check (a database read, a heartbeat
# write) is reused for this long, so 200 agents re-asking after a fleet-wide change do not queue
# 200 database hops ahead of the next change's build. A revoked token is refused within this time.
AUTH_REUSE_SECONDS = 2.0
BATCH_SECONDS = 0.01
MAX_WAIT_SECONDS = 60

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def close_db() -> None:
    # A thread hop must not keep a connection open for the whole wait (or forever, in a pool
    # thread). Inside a test's transaction there is nothing to close.
    if not connection.in_atomic_block:
        connection.close()


# The long-poll's database work runs on threads of its own, each keeping its connection between
# hops (opening one per hop was half of a token check): builds and the watcher's resync on one,
# token checks on two more, so 200 agents re-asking at once never queue ahead of the next
# change's build. Bounded: DB_THREADS connections per web process, whatever waits.
_BUILD_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="longpoll-build")
_AUTH_EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="longpoll-auth")
DB_THREADS = 3
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _on_kept_connection(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    @functools.wraps(fn)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if connection.in_atomic_block:  # a test's transaction: its connection is not ours to manage
            return fn(*args, **kwargs)
        try:
            result = fn(*args, **kwargs)
        except (OperationalError, InterfaceError):
            # The kept connection may have died with the database (a restart): once more, on a new one.
            connection.close()
            result = fn(*args, **kwargs)
        if connection.errors_occurred:
            connection.close()
        return result
    return run


def on_db_thread(fn: Callable[_P, _R], executor: ThreadPoolExecutor = _BUILD_EXECUTOR) -> Callable[_P, Awaitable[_R]]:
    """`fn` as an awaitable run on one of the long-poll's database threads, with its kept connection."""
    return sync_to_async(_on_kept_connection(fn), thread_sensitive=False, executor=executor)


def _db_version() -> int:
    from steering.readmodels.version import current_version

    return current_version()


class VersionWatcher:
    """The latest committed state version, for the waiters of one event loop."""

    KEEP_VERSIONS = 10_000

    def __init__(self) -> None:
        self.latest = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # version -> the PoPs it can affect (None: possibly all); from the pub/sub events.
        self.affected: dict[int, frozenset[int] | None] = {}
        self.on_reset: list[Callable[[], None]] = []

    def note(self, version: int, pops: list[int] | None) -> None:
        self.affected[version] = frozenset(pops) if pops is not None else None
        if len(self.affected) > self.KEEP_VERSIONS:
            for old in sorted(self.affected)[: len(self.affected) - self.KEEP_VERSIONS]:
                del self.affected[old]
        self.bump(version)

    def untouched(self, pop_id: int | None, since: int, until: int) -> bool:
        """Did no version in (since, until] affect this PoP? Unknown versions count as affecting
        (a missed event, a bump seen only in the database), and the DNS layer (no PoP) always is."""
        if pop_id is None or until - since > 1000:
            return False
        for version in range(since + 1, until + 1):
            pops = self.affected.get(version, None)
            if pops is None or pop_id in pops:
                return False
        return True

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="steering-version-watcher")

    def bump(self, version: int) -> None:
        if version > self.latest:
            self.latest = version
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def _resync(self) -> None:
        try:
            version = await on_db_thread(_db_version)()
            if version < self.latest:
                # The database went back in time (restored from a backup): forget what was
                # known of later versions, or agents would wait for versions that never come.
                logger.warning("state version went back from %s to %s: resetting", self.latest, version)
                self.latest, self.affected = version, {}
                for reset in self.on_reset:
                    reset()
            self.bump(version)
        except Exception as exc:  # the database away too: waiters keep waiting, agents keep their state
            logger.debug("version watcher: database not answering: %s", exc)

    async def _run(self) -> None:
        from steering.redis_keys import STATE_VERSION_CHANNEL
        from steering.redisconn import async_client

        await self._resync()
        while True:
            client = async_client(socket_connect_timeout=2)  # REDIS_URL, plain or Sentinel
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(STATE_VERSION_CHANNEL)
                    last_resync = time.monotonic()
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=RESYNC_SECONDS)
                        if message is not None:
                            try:
                                event = json.loads(message["data"])
                                self.note(int(event["v"]), event.get("pops"))
                            except (TypeError, ValueError, KeyError):
                                pass
                        if time.monotonic() - last_resync >= RESYNC_SECONDS:
                            last_resync = time.monotonic()
                            await self._resync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("version watcher: Redis not answering (%s); following the database", exc)
                await self._resync()
                await asyncio.sleep(RESYNC_SECONDS)
            finally:
                try:
                    await client.aclose()
                except Exception:
                    pass

    async def wait_beyond(self, after: int, timeout: float) -> int:
        self.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.latest <= after:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                break
        return self.latest


_WATCHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, VersionWatcher] = weakref.WeakKeyDictionary()


def watcher_for_running_loop() -> VersionWatcher:
    """The one VersionWatcher of this event loop (one Redis subscription per process, shared by
    every long-poll served here), started."""
    loop = asyncio.get_running_loop()
    watcher = _WATCHERS.get(loop)
    if watcher is None:
        watcher = _WATCHERS[loop] = VersionWatcher()
    watcher.start()
    return watcher


@dataclass
class _Cached:
    version: int
    document: dict[str, Any]
    encoded_spec: bytes | None = None   # the spec as its etag digested it, spliced into the body
    _body: bytes | None = None

    @property
    def body(self) -> bytes:
        # Serialised on first use: an agent told "unchanged" (304) never needs it.
        if self._body is None:
            document = self.document if self.encoded_spec is None else \
                {**self.document, "spec": orjson.Fragment(self.encoded_spec)}
            self._body = orjson.dumps(document, default=str)
        return self._body

    @property
    def etag(self) -> str:
        return str(self.document["etag"])

    @property
    def refresh_at(self) -> float | None:
        value = self.document.get("refresh_at")
        return float(value) if value is not None else None

    def advanced(self, version: int) -> _Cached:
        return _Cached(version, {**self.document, "version": version}, self.encoded_spec)

    def fresh_for(self, at_least: int) -> bool:
        due = self.refresh_at
        return self.version >= at_least and (due is None or time.time() < due)


class DocumentCache:
    """The latest desired document per (layer, scope). Agents woken by one change share the
    builds: one scope is built once however many agents wait on it, and the scopes of one layer
    that need building at the same moment are built together in one thread hop (a fleet-wide
    change rebuilds 200 PoPs in a few queries, not 200 times three)."""

    def __init__(self) -> None:
        self._docs: dict[tuple[str, str], _Cached] = {}
        self._building: dict[tuple[str, str], asyncio.Future[_Cached]] = {}
        self._queued: dict[str, dict[str, int | None]] = {}   # layer -> scope -> pop id, to build next
        self._flush_scheduled = False

    def clear(self) -> None:
        self._docs.clear()

    def _usable(self, key: tuple[str, str], at_least: int,
                untouched: Callable[[int, int], bool] | None) -> _Cached | None:
        cached = self._docs.get(key)
        if cached is None:
            return None
        if cached.version < at_least and untouched is not None and cached.fresh_for(cached.version) \
                and untouched(cached.version, at_least):
            # Nothing between its version and the latest concerns this scope: the same spec is
            # the desired state as of the latest version too.
            cached = self._docs[key] = cached.advanced(at_least)
        return cached if cached.fresh_for(at_least) else None

    async def get(self, key: tuple[str, str], at_least: int, pop_id: int | None,
                  untouched: Callable[[int, int], bool] | None = None) -> _Cached:
        while True:
            cached = self._usable(key, at_least, untouched)
            if cached is not None:
                return cached
            building = self._building.get(key)
            if building is None:
                building = self._building[key] = asyncio.get_running_loop().create_future()
                self._queued.setdefault(key[0], {})[key[1]] = pop_id
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    # A moment later, so every waiter one wake-up released has queued its scope
                    # (each takes a few loop turns to get here): one build for all of them.
                    asyncio.get_running_loop().call_later(BATCH_SECONDS, lambda: asyncio.ensure_future(self._flush()))
            fresh = await asyncio.shield(building)
            if fresh.version >= at_least:  # just built: current, even if a ramp's next step is near
                return fresh

    async def _flush(self) -> None:
        self._flush_scheduled = False
        queued, self._queued = self._queued, {}
        for layer, scopes in queued.items():
            keys = [(layer, scope) for scope in scopes]
            try:
                documents = await on_db_thread(_build_many)(layer, scopes)
            except Exception as exc:
                for key in keys:
                    future = self._building.pop(key, None)
                    if future is not None and not future.done():
                        future.set_exception(exc)
                continue
            for key in keys:
                future = self._building.pop(key, None)
                document = documents.get(key[1])
                if document is None:  # the PoP went away meanwhile
                    if future is not None and not future.done():
                        future.set_exception(LookupError(f"no desired state for {key[0]}/{key[1]}"))
                    continue
                fresh = self._docs[key] = _Cached(int(document[0]["version"]), *document)
                if future is not None and not future.done():
                    future.set_result(fresh)


def _int(params: dict[str, list[str]], name: str, *, low: int, high: int | None = None) -> int | None:
    values = params.get(name)
    if not values or values[-1] == "":
        return None
    from steering.api.agent_scope import ScopeError

    try:
        value = int(values[-1])
    except ValueError:
        raise ScopeError(400, "invalid", "Invalid input.", {name: ["A whole number."]}) from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ScopeError(400, "invalid", "Invalid input.", {name: [f"Must be {bound}."]})
    return value


def _authorize(authorization: str, layer: str | None, pop: str | None, instance: str | None) -> Any:
    """Thread side (on_db_thread): the caller's token, the scope, the heartbeat. Returns the AgentIdentity."""
    from rest_framework import exceptions

    from steering.api.agent_scope import AgentCaller, ScopeError, resolve
    from steering.api.auth import BearerTokenAuthentication
    from steering.services.agents import record_seen

    try:
        found = BearerTokenAuthentication().authenticate_value(authorization)
        if found is None:
            raise ScopeError(401, "not_authenticated", "Send Authorization: Bearer <token>.")
        user, token = found
        identity = resolve(AgentCaller(user, token), layer, pop, instance, writing=False)
        if token.is_agent:
            record_seen(identity)
        return identity
    except exceptions.AuthenticationFailed as exc:
        raise ScopeError(401, "authentication_failed", str(exc.detail)) from exc


def _build_many(layer: str, scopes: dict[str, int | None]) -> dict[str, tuple[dict[str, Any], bytes | None]]:
    """Thread side: the documents of these scopes (scope -> PoP id, None for the DNS layer), each
    with its encoded spec when it was encoded on the way."""
    from steering.dataplane.desired import desired_document, encoded_documents
    from steering.models import PoP

    if layer == "dns":
        return {scope: (desired_document(layer, None), None) for scope in scopes}
    pops = list(PoP.objects.filter(pk__in=[pk for pk in scopes.values() if pk is not None]))
    by_id = encoded_documents(layer, pops)
    return {scope: by_id[pk] for scope, pk in scopes.items() if pk is not None and pk in by_id}


class AuthorizationCache:
    """Recent successful token checks of the long-poll, by a digest of (Authorization, scope)."""

    MAX_ENTRIES = 50_000

    def __init__(self, seconds: float = AUTH_REUSE_SECONDS) -> None:
        self.seconds = seconds
        self._kept: dict[bytes, tuple[float, Any]] = {}

    @staticmethod
    def key(authorization: str, *scope: str | None) -> bytes:
        return hashlib.sha256("\x00".join([authorization, *(v or "" for v in scope)]).encode()).digest()

    def get(self, key: bytes, now: float) -> Any | None:
        kept = self._kept.get(key)
        if kept is None or now - kept[0] >= self.seconds:
            return None
        return kept[1]

    def put(self, key: bytes, identity: Any, now: float) -> None:
        if len(self._kept) >= self.MAX_ENTRIES:
            self._kept = {k: v for k, v in self._kept.items() if now - v[0] < self.seconds}
        self._kept[key] = (now, identity)


class DesiredStateApp:
    """ASGI: the desired-state long-poll at PATH; everything else goes to `inner` (Django)."""

    def __init__(self, inner: Callable[..., Awaitable[None]]) -> None:
        self.inner = inner
        self.watcher: VersionWatcher | None = None
        self.cache = DocumentCache()
        self.authorized = AuthorizationCache()

    async def authorize(self, authorization: str, layer: str | None, pop: str | None, instance: str | None) -> Any:
        """The caller's AgentIdentity: checked in a thread hop, or reused from a check moments ago."""
        key = AuthorizationCache.key(authorization, layer, pop, instance)
        now = time.monotonic()
        identity = self.authorized.get(key, now)
        if identity is None:
            identity = await on_db_thread(_authorize, _AUTH_EXECUTOR)(authorization, layer, pop, instance)
            self.authorized.put(key, identity, now)
        return identity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] not in ("GET", "HEAD"):
            await self.inner(scope, receive, send)
            return
        if self.watcher is None:
            self.watcher = watcher_for_running_loop()
            self.watcher.on_reset.append(self.cache.clear)
            from steering.dataplane.haproxy.desired import SERVER_LISTS

            self.watcher.on_reset.append(SERVER_LISTS.clear)  # rows may have gone back with the database
        disconnected = asyncio.ensure_future(_disconnect(receive))
        try:
            await self.handle(scope, send, disconnected)
        finally:
            disconnected.cancel()

    async def handle(self, scope: Scope, send: Send, disconnected: asyncio.Future[None]) -> None:
        from steering.api.agent_scope import ScopeError

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        params = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        try:
            after = _int(params, "after", low=0)
            wait = _int(params, "wait", low=0, high=MAX_WAIT_SECONDS) or 0
            identity = await self.authorize(
                headers.get("authorization", ""), (params.get("layer") or [None])[-1],
                (params.get("pop") or [None])[-1], (params.get("instance") or [None])[-1])
        except ScopeError as exc:
            await _respond(send, exc.status, exc.body())
            return
        watcher = self.watcher
        assert watcher is not None
        watcher.start()
        key = (identity.layer, identity.scope)
        pop_id = identity.pop.pk if identity.pop is not None else None
        running = headers.get("if-none-match")   # the etag of the spec the agent runs
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (wait if after is not None else 0)
        while True:
            try:
                cached = await self.cache.get(key, watcher.latest, pop_id,
                                              lambda since, until: watcher.untouched(pop_id, since, until))
            except Exception:
                logger.exception("desired state for %s/%s", *key)
                await _respond(send, 503, {"code": "unavailable",
                                           "detail": "The desired state cannot be read now; keep the last one."})
                return
            if after is None or cached.version > after or (running is not None and cached.etag != running):
                if running == cached.etag:  # nothing to apply: acknowledge this version
                    await _respond(send, 304, None, version=cached.version, etag=cached.etag)
                else:
                    await _respond(send, 200, cached.body, version=cached.version, etag=cached.etag)
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                await _respond(send, 304, None, version=after)
                return
            # Wake on a new version, or when a ramp's next step is due (the spec changes by the clock).
            due = cached.refresh_at
            timeout = remaining if due is None else max(0.05, min(remaining, due - time.time()))
            waiting: asyncio.Future[Any] = asyncio.ensure_future(watcher.wait_beyond(max(after, cached.version), timeout))
            await asyncio.wait([waiting, disconnected], return_when=asyncio.FIRST_COMPLETED)
            if disconnected.done():  # the agent went away (or the server stops): stop waiting for it
                waiting.cancel()
                return


async def _disconnect(receive: Receive) -> None:
    """Returns when the client disconnects (a GET's body, if any, is read and ignored)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _respond(send: Send, status: int, body: Any, *, version: int | None = None, etag: str | None = None) -> None:
    payload = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
               (b"cache-control", b"no-store")]
    if version is not None:
        headers.append((b"x-steering-version", str(version).encode()))
    if etag is not None:
        headers.append((b"etag", etag.encode()))
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
