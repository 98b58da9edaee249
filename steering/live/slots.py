"""Open live sockets per user, counted in Redis so that every web process sees one count.

Each socket is a member of its user's sorted set, scored by the time it expires. A living socket
moves its expiry forward every few seconds (LiveConsumer's guard loop); a socket whose process
died without a disconnect stops doing so, and its entry drops out of the count SLOT_TTL_SECONDS
later. Synchronous (the process's one Redis client); the consumer calls these from a thread.
"""

from __future__ import annotations

import time

from steering.redis_keys import LIVE_CONNS
from steering.redisconn import sync_client

SLOT_TTL_SECONDS = 30

# Drop expired entries, then admit the socket if the user is under the limit (or it is already
# in). One script, so two processes admitting at once cannot both take the last slot.
_CLAIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[4]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


def _key(user_id: int) -> str:
    return LIVE_CONNS.format(user_id=user_id)


def claim(user_id: int, connection: str, limit: int) -> bool:
    """Take a slot for `connection`; False when the user already has `limit` open sockets."""
    now = time.time()
    return bool(sync_client().eval(_CLAIM, 1, _key(user_id), now, now + SLOT_TTL_SECONDS, limit, connection,
                                   SLOT_TTL_SECONDS))


def refresh(user_id: int, connection: str) -> None:
    """Keep the slot of a socket that still lives (re-adding it if Redis lost it)."""
    pipe = sync_client().pipeline(transaction=False)
    pipe.zadd(_key(user_id), {connection: time.time() + SLOT_TTL_SECONDS})
    pipe.expire(_key(user_id), SLOT_TTL_SECONDS)
    pipe.execute()


def release(user_id: int, connection: str) -> None:
    sync_client().zrem(_key(user_id), connection)


def count(user_id: int) -> int:
    """Open sockets of the user now (expired entries left out)."""
    return int(sync_client().zcount(_key(user_id), time.time(), "+inf"))
