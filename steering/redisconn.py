"""The one place that turns REDIS_URL into Redis clients, and into the settings of Celery's
broker, the channel layer, the Django cache and beat (config/settings.py).

REDIS_URL is either a Redis URL (`redis://[:password@]host:port/db`, `rediss://...`), used as it
is everywhere, or a Sentinel set:

    sentinel://[:password@]host1:port1,host2:port2[,...]/<master-name>[/<db>]

e.g. `sentinel://:s3cret@192.0.2.11:26379,192.0.2.12:26379,192.0.2.13:26379/steering/0`. Every client
asks the sentinels which server is the master of <master-name> and connects there; after a
failover its next connection goes to the promoted replica. The password is the Redis servers'
(requirepass, the same on every server of the set; percent-encode `@ / : ,` in it); the sentinels
are asked without one. A port left out is 26379; <db> defaults to 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel
import redis.sentinel

SCHEME = "sentinel://"
DEFAULT_SENTINEL_PORT = 26379
# Sentinels answer at once or not at all: a short timeout moves on to the next one.
SENTINEL_SOCKET_OPTIONS = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}


@dataclass(frozen=True)
class SentinelSet:
    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    password: str | None = None
    username: str | None = None

    def connection_options(self) -> dict[str, Any]:
        """What every connection to the master carries (db, credentials)."""
        options: dict[str, Any] = {"db": self.db}
        if self.password is not None:
            options["password"] = self.password
        if self.username is not None:
            options["username"] = self.username
        return options


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [::1]:26379
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, colon, port = item.rpartition(":")
        if not colon:
            host, port = item, ""
    if not host:
        raise ValueError(f"a sentinel address without a host: {item!r}")
    try:
        return host, int(port) if port else DEFAULT_SENTINEL_PORT
    except ValueError:
        raise ValueError(f"a sentinel port is not a number: {item!r}") from None


def sentinel_set(url: str) -> SentinelSet | None:
    """The Sentinel set a `sentinel://` URL names; None for any other (a plain Redis URL).
    ValueError says what is wrong with a malformed one."""
    if not url.startswith(SCHEME):
        return None
    rest = url[len(SCHEME):]
    if "?" in rest or "#" in rest:
        raise ValueError("a sentinel:// URL takes no query or fragment")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    sentinels = tuple(_host_port(item.strip()) for item in hosts.split(",") if item.strip())
    if not sentinels:
        raise ValueError("a sentinel:// URL names no sentinel (host:port,host:port)")
    parts = [unquote(p) for p in path.split("/")]
    if not parts[0] or len(parts) > 2:
        raise ValueError("a sentinel:// URL ends with /<master-name>/<db>")
    try:
        db = int(parts[1]) if len(parts) == 2 and parts[1] else 0
    except ValueError:
        raise ValueError(f"the database is a number, not {parts[1]!r}") from None
    return SentinelSet(sentinels, parts[0], db, password, username)


def printable(url: str) -> str:
    """The URL with any password replaced by ***, for logs and banners (works for sentinel://)."""
    return re.sub(r"^([a-z+]+://[^:@/]*):[^@/]*@", r"\1:***@", url)


def _configured_url(url: str | None) -> str:
    if url is not None:
        return url
    from django.conf import settings

    return str(settings.REDIS_URL)


# --- clients ------------------------------------------------------------------------------
_clients: dict[tuple[str, bool], redis.Redis] = {}


def sync_client(url: str | None = None, *, decode_responses: bool = False) -> redis.Redis:
    """The process's client for REDIS_URL (or `url`): one per URL and process, because redis-py
    pools are thread-safe and notice a fork, so Celery's prefork children get their own
    connections. 2 s timeouts: a caller on a request path must not hang on a vanished Redis."""
    url = _configured_url(url)
    key = (url, decode_responses)
    client = _clients.get(key)
    if client is None:
        options: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2,
                                   "decode_responses": decode_responses}
        target = sentinel_set(url)
        if target is None:
            client = redis.Redis.from_url(url, **options)
        else:
            # Sentinel derives the sentinels' socket options from these; it never sends them the password.
            sentinel = redis.sentinel.Sentinel(target.sentinels, **options, **target.connection_options())
            client = sentinel.master_for(target.master_name)
        _clients[key] = client
    return client


class _AsyncSentinelRedis(aioredis.Redis):
    """An asyncio client on a Sentinel set whose aclose() also closes its connections to the
    sentinels (redis-py leaves them to the caller)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def async_client(url: str | None = None, **options: Any) -> aioredis.Redis:
    """A new asyncio client for REDIS_URL (or `url`), for one event loop; the caller aclose()s it."""
    url = _configured_url(url)
    target = sentinel_set(url)
    if target is None:
        return aioredis.Redis.from_url(url, **options)
    sentinel = redis.asyncio.sentinel.Sentinel(target.sentinels, **options, **target.connection_options())
    client: aioredis.Redis = sentinel.master_for(target.master_name, redis_class=_AsyncSentinelRedis)
    return client


class SentinelConnectionPool(redis.sentinel.SentinelConnectionPool):
    """Django's RedisCache builds its pools with `pool_class.from_url(location, **options)`:
    this one accepts a sentinel:// location."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SentinelConnectionPool:  # type: ignore[override]
        target = sentinel_set(url)
        if target is None:
            raise ValueError(f"not a sentinel:// URL: {printable(url)}")
        sentinel = redis.sentinel.Sentinel(target.sentinels, sentinel_kwargs=dict(SENTINEL_SOCKET_OPTIONS))
        return cls(target.master_name, sentinel, **{**options, **target.connection_options()})


# --- settings fragments (config/settings.py) ------------------------------------------------
def cache_settings(url: str) -> dict[str, Any]:
    """BACKEND, LOCATION (and OPTIONS) of a Django cache on REDIS_URL: Django's own RedisCache;
    for a Sentinel set with our pool class, which resolves the master through the sentinels.
    Rather than django-redis' Sentinel client: the same backend, values and keys as on a plain
    URL (the throttling and sign-in counts do not change form), and no second cache library."""
    backend = "django.core.cache.backends.redis.RedisCache"
    if sentinel_set(url) is None:
        return {"BACKEND": backend, "LOCATION": url}
    # A list: Django splits a string LOCATION at "," and ";" into several servers.
    return {"BACKEND": backend, "LOCATION": [url],
            "OPTIONS": {"pool_class": f"{__name__}.SentinelConnectionPool"}}


def channel_layer_host(url: str, **options: Any) -> dict[str, Any]:
    """One entry of channels-redis' CONFIG["hosts"] (a Sentinel set: its sentinels/master_name form)."""
    target = sentinel_set(url)
    if target is None:
        return {"address": url, **options}
    return {"sentinels": list(target.sentinels), "master_name": target.master_name,
            "sentinel_kwargs": dict(SENTINEL_SOCKET_OPTIONS), **target.connection_options(), **options}


def celery_broker(url: str) -> tuple[str, dict[str, Any]]:
    """broker_url and broker_transport_options: a Sentinel set becomes kombu's sentinel transport,
    one `sentinel://` URL per sentinel joined by ";" (kombu takes the password and db from them)."""
    target = sentinel_set(url)
    if target is None:
        return url, {}
    auth = ""
    if target.password is not None or target.username is not None:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password or '', safe='')}@"
    hosts = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in target.sentinels]
    broker = ";".join(f"sentinel://{auth}{host}/{target.db}" for host in hosts)
    return broker, {"master_name": target.master_name, "sentinel_kwargs": dict(SENTINEL_SOCKET_OPTIONS)}


# --- kombu's Redis transport: a channel left behind by a collected connection ----------------
def _refuse_channels_of_collected_connections() -> None:
    """A kombu Redis channel whose broker connection has been collected fails as a lost connection
    (redis.ConnectionError, which kombu and Celery handle) instead of with an AttributeError.

    Why: when the worker loses the broker (the master SIGKILLed, a Sentinel failover), Celery calls
    `connection.collect()` then `connection.close()` (Consumer.on_connection_error_after_connected).
    collect() closes the channels and detaches the transport (transport.client = None), but a close
    that fails on the dead server (the outstanding BRPOP reply, the remote-control queue's delete)
    leaves the default channel open, and close() closes it again. That second close drops its pools
    and, when it holds a task message delivered but not yet acknowledged (not yet taken by a pool
    process: a window a busy machine widens), restores it, which rebuilds a pool from the detached
    transport's connection info: kombu.transport.redis.Channel._connparams raises
    `AttributeError: 'NoneType' object has no attribute 'hostname'`. That is no connection error,
    so Celery's ignore_errors lets it through and the worker stops ("Unrecoverable error"): no task
    runs again, no drain completes. A late acknowledgement on such a channel fails the same way.
    Raised as a connection error instead, the restore gives up as it does when Redis is away (the
    message waits in the unacked set for the visibility timeout, as after any lost connection), a
    late acknowledgement is logged as not made, and the worker reconnects to the promoted master."""
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.Channel._connparams
    if getattr(original, "refuses_collected_connections", False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        transport = self.connection
        if transport is None or transport.client is None:
            raise redis.exceptions.ConnectionError("this broker channel's connection was collected or closed")
        return original(self, asynchronous)

    _connparams.refuses_collected_connections = True  # type: ignore[attr-defined]
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]  # SentinelChannel inherits it


_refuse_channels_of_collected_connections()
