"""The GSLB server process: the remote-backend app on uvicorn, plus one background thread that

- checks the state version in Redis every 100 ms and rebuilds the snapshot (ORM) when it moves,
  and at least every REBUILD_SECONDS anyway (a missed bump, Redis away and back);
- sets the heartbeat key and flushes the answer counters every second.

Lookups never touch the DB or Redis: they read the snapshot the thread last swapped in.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import close_old_connections

from steering.gslb import counters
from steering.gslb.app import LatencyRecorder, RemoteBackendApp, SnapshotHolder
from steering.gslb.counters import AnswerCounter
from steering.gslb.snapshot import build_from_db
from steering.services.effects import VERSION_KEY, _redis

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1
BEAT_SECONDS = 1.0
REBUILD_SECONDS = 30.0


class Refresher(threading.Thread):
    def __init__(self, holder: SnapshotHolder, counter: AnswerCounter) -> None:
        super().__init__(name="gslb-refresher", daemon=True)
        self.holder = holder
        self.counter = counter
        self.stopping = threading.Event()
        self._seen: bytes | None = None
        self._last_warning = 0.0

    def _warn(self, what: str, exc: Exception) -> None:
        # One line every 30 s while something is away, not a traceback every 100 ms.
        now = time.monotonic()
        if now - self._last_warning > 30:
            self._last_warning = now
            logger.warning("gslb: could not %s: %s (answers keep coming from the last snapshot)", what, exc)

    def rebuild(self, seen: bytes | None) -> None:
        close_old_connections()
        version = int(seen) if seen and seen.isdigit() else None
        snapshot = build_from_db(version)
        self.holder.current = snapshot
        self.holder.built_at = time.time()
        self._seen = seen
        logger.debug("gslb: snapshot for version %s: %d services, %d zones", version, len(snapshot.services),
                    len(snapshot.zones))

    def tick(self, client: Any, *, beat: bool) -> None:
        try:
            seen = client.get(VERSION_KEY)
        except Exception as exc:
            self._warn("read the state version", exc)
            seen = self._seen
        stale = time.time() - self.holder.built_at > REBUILD_SECONDS
        if self.holder.current is None or seen != self._seen or stale:
            try:
                self.rebuild(seen)
            except Exception as exc:
                self._warn("rebuild the snapshot from the DB", exc)
        if beat:
            try:
                counters.beat(client)
                self.counter.flush(client)
            except Exception as exc:
                self._warn("write the heartbeat and answer counts to Redis", exc)

    def run(self) -> None:
        client = _redis()
        next_beat = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            beat = now >= next_beat
            if beat:
                next_beat = now + BEAT_SECONDS
            self.tick(client, beat=beat)
            self.stopping.wait(POLL_SECONDS)


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen wants HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve(listen: str) -> None:
    import uvicorn

    host, port = parse_listen(listen)
    holder, counter = SnapshotHolder(), AnswerCounter()
    app = RemoteBackendApp(holder, counter, LatencyRecorder())
    refresher = Refresher(holder, counter)
    refresher.tick(_redis(), beat=True)  # serve from the first request on, when the DB answers
    refresher.start()
    config = uvicorn.Config(app, host=host, port=port, loop="uvloop", http="httptools", lifespan="off",
                            access_log=False, log_level="warning")
    try:
        uvicorn.Server(config).run()
    finally:
        refresher.stopping.set()
        refresher.join(timeout=2)
