"""Celery beat that sends the periodic tasks from one process however many run.

Every beat runs this scheduler (settings: CELERY_BEAT_SCHEDULER), RedBeat's (celery-redbeat):
the schedule and each entry's last run live in Redis, and only the beat holding the lock
`steering:redbeat:lock` (steering.redis_keys.REDBEAT_LOCK) sends. It renews the lock at every
tick (at least once a second) for CELERY_REDBEAT_LOCK_TIMEOUT seconds (STEERING_BEAT_LOCK_SECONDS);
the others stand by and try to take it every CELERY_BEAT_MAX_LOOP_INTERVAL (1 s). So a SIGKILLed
active beat is replaced within the lock timeout plus a second, and its successor goes on from
the last runs in Redis: no wave is sent twice. A beat stopped cleanly (SIGTERM) releases the lock
at once.

What differs from RedBeatScheduler, all for staying up through a Redis failover:
- the lock is taken in tick(), never in beat_init: the stock handler blocks there, and an error
  while it waits (Redis away) leaves a beat that crashes at its first tick;
- a tick that cannot reach Redis sends nothing and tries again instead of ending the process;
- a beat that finds its lock gone (it stalled past the timeout and another took over, or Redis
  lost the key) stands by again, and whoever takes the lock installs the static schedule first
  (a Redis restarted empty has lost it);
- Redis is reached through steering.redisconn, so a sentinel:// REDIS_URL works as everywhere.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.signals import beat_init
from redbeat import schedulers as redbeat
from redis.exceptions import LockError, RedisError

from steering.redisconn import printable, sync_client

logger = logging.getLogger("celery.beat")

# The stock handler acquires the lock in beat_init, blocking; this scheduler takes it in tick().
beat_init.disconnect(redbeat.acquire_distributed_beat_lock)


class LockedScheduler(redbeat.RedBeatScheduler):  # type: ignore[misc]
    WARN_EVERY_SECONDS = 30.0
    lock: Any = None  # a redis-py Lock while this beat is the one sending

    def __init__(self, app: Any, **kwargs: Any) -> None:
        # RedBeat tells a setting it was given from one it falls back on by its bare name, which
        # Django's CELERY_ namespace hides (CELERY_REDBEAT_REDIS_URL): without the bare names it
        # warns that it fell back on the broker's URL and transport options.
        for name in ("redbeat_redis_url", "redbeat_redis_options"):
            app.conf[name] = app.conf.first(name)
        redbeat.ensure_conf(app)
        # RedBeat builds a client from redbeat_redis_url (and, for Sentinel, a new one per call)
        # unless the app already has one: ours, one pool per process that follows failovers.
        # decode_responses: RedBeat compares the keys it reads with str names.
        setattr(app, redbeat.REDBEAT_REDIS_KEY, sync_client(decode_responses=True))
        self._standing_by = False
        self._installed = False  # the static schedule, written to Redis by the beat that takes the lock
        self._last_warning = 0.0
        # lazy: no schedule written at start (the stock scheduler does, and dies if Redis is away);
        # tick() installs it once this beat holds the lock.
        super().__init__(app, **{**kwargs, "lazy": True})

    def tick(self, min: Any = min, **kwargs: Any) -> float:
        try:
            if not self._hold_lock():
                return float(self.max_interval)
            if not self._installed:
                self.setup_schedule()  # keeps each entry's last run that Redis has
                self._installed = True
            remaining = []
            for entry in self.schedule.values():
                next_time_to_run = self.maybe_due(entry, **self._maybe_due_kwargs)
                if next_time_to_run:
                    remaining.append(next_time_to_run)
        except RedisError as exc:  # Redis away or failing over: send nothing, try again shortly
            now = time.monotonic()
            if now - self._last_warning > self.WARN_EVERY_SECONDS:
                self._last_warning = now
                logger.warning("beat: Redis does not answer (%s); retrying every %ss", exc, self.max_interval)
            return float(self.max_interval)
        return float(min(remaining + [self.max_interval]))

    def _hold_lock(self) -> bool:
        """Renew the lock this beat holds, else try to take it; True: this beat sends."""
        if self.lock is not None:
            try:
                # To a full lock timeout from now (not added to what is left).
                self.lock.extend(self.lock_timeout, replace_ttl=True)
                return True
            except LockError:
                logger.warning("beat: lost the lock %s (held past its timeout by another beat, or lost by "
                               "Redis); standing by", self.lock_key)
                self.lock = None
        lock = redbeat.get_redis(self.app).lock(self.lock_key, timeout=self.lock_timeout, thread_local=False)
        if not lock.acquire(blocking=False):
            if not self._standing_by:
                logger.info("beat: another beat holds the lock %s; standing by", self.lock_key)
                self._standing_by = True
            return False
        self.lock, self._standing_by, self._installed = lock, False, False
        logger.info("beat: acquired the lock %s; sending the periodic tasks", self.lock_key)
        return True

    def close(self) -> None:
        try:
            super().close()  # releases the lock when this beat holds it
        except RedisError as exc:
            logger.warning("beat: could not release the lock (%s); it expires by itself", exc)

    @property
    def info(self) -> str:
        # RedBeat's own line parses the URL with kombu, which a sentinel:// list of hosts defeats.
        return (f"       . redis -> {printable(self.app.redbeat_conf.redis_url)}\n"
                f"       . lock -> `{self.lock_key}` {self.lock_timeout}s")
