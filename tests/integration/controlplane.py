"""The whole control plane on stores of a test's own, so the test can take all of it away and bring
it back: a private PostgreSQL cluster (tests.postgres), a private redis-server
(config.embedded.PrivateRedis), the web process (uvicorn), a Celery worker and Celery beat
(tests.processes), all on 127.0.0.1.

`stop()` ends every piece: the web process, the worker and beat (at once), then Redis and the
database. `start_stores()` brings the database and Redis back (Redis as a new, empty server on the
same port and password, as a restart without persistence leaves it); `start_workers()` the worker
and beat; `start_web()` the web process once the worker is ready, returning when it answers
/healthz. The test process reaches the database by SQL (`sql`) and runs Django code against it in
subprocesses (`python`): pytest's own Django connection is the machine's test database.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from config.embedded import PrivateRedis
from tests.postgres import PrivatePostgres
from tests.processes import ROOT, CeleryProcess, WebProcess, subprocess_env


class ControlPlane:
    def __init__(self, tmp: Path, **env: str) -> None:
        self.tmp = tmp
        self.extra_env = env
        self.pg = PrivatePostgres()
        self.redis: PrivateRedis | None = None
        # stop() does not wait out the agents' long-polls in flight (uvicorn's graceful shutdown
        # would): SIGTERM, then SIGKILL after 3 s, as a dying host would.
        self.web = WebProcess(tmp, stop_timeout=3)
        self.worker: CeleryProcess | None = None
        self.beat: CeleryProcess | None = None
        self._conn: Any = None

    def env(self) -> dict[str, str]:
        assert self.redis is not None
        return {"DATABASE_URL": self.pg.url(), "REDIS_URL": self.redis.url,
                "STEERING_VAR_DIR": str(self.tmp / "var"), **self.extra_env}

    # --- the stores ---------------------------------------------------------------------------

    def create(self) -> ControlPlane:
        """A new cluster and database, a Redis, the schema migrated."""
        self.pg.init()
        self.pg.start()
        self.pg.create_database()
        self.redis = PrivateRedis().start()
        self.python("manage.py", "migrate", "--noinput", "-v", "0")
        return self

    def start_stores(self) -> None:
        self.pg.start()
        old = self.redis
        assert old is not None
        self.redis = PrivateRedis(port=old.port, password=old.password).start()

    def stores_down(self) -> bool:
        """Neither the database nor Redis accepts a connection."""
        import redis

        assert self.redis is not None
        try:
            redis.Redis.from_url(self.redis.url, socket_connect_timeout=1, socket_timeout=1).ping()
            return False
        except redis.RedisError:
            return not self.pg.accepting()

    # --- the services ---------------------------------------------------------------------------

    def start_workers(self) -> None:
        """The Celery worker and beat, not waiting for them (start_web does)."""
        self.worker = CeleryProcess("worker", self.tmp, "--concurrency", "2", env=self.env())
        self.beat = CeleryProcess("beat", self.tmp, env=self.env())

    def start_web(self, timeout: float = 60.0) -> float:
        """Once the worker is ready, the web process; returns when it answered /healthz
        (time.monotonic()). It comes last: the agents' catch-up is measured from it."""
        assert self.worker is not None
        deadline = time.monotonic() + timeout
        while " ready." not in self.worker.log():
            if self.worker.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the Celery worker did not start:\n{self.worker.log()[-3000:]}")
            time.sleep(0.1)
        self.web.env = self.env()
        self.web.start(timeout=timeout)
        return time.monotonic()

    def start_services(self, timeout: float = 60.0) -> float:
        self.start_workers()
        return self.start_web(timeout)

    def stop(self) -> None:
        """The whole control plane away: the web process, the worker and beat at once (SIGTERM,
        SIGKILL after a few seconds), then Redis and the database."""
        self.close_sql()
        stops = [self.web.stop, *(p.stop for p in (self.worker, self.beat) if p is not None)]
        threads = [threading.Thread(target=stop, name="stop-control-plane") for stop in stops]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.worker = self.beat = None
        if self.redis is not None:
            self.redis.stop()
        self.pg.stop("fast")

    def close(self) -> None:
        """Teardown: whatever is still running goes, and the cluster's files with it."""
        for stop in (self.close_sql, self.web.stop, *(p.stop for p in (self.worker, self.beat) if p is not None),
                     *((self.redis.stop,) if self.redis is not None else ()), self.pg.cleanup):
            try:
                stop()
            except Exception as exc:  # teardown goes on: every process must go
                print(f"teardown: {exc}", file=sys.stderr)

    # --- reaching the database ----------------------------------------------------------------------

    def python(self, *args: str, timeout: float = 120) -> str:
        """Run Python (manage.py, a seed module) against the control plane's database and Redis."""
        done = subprocess.run([sys.executable, *args], cwd=ROOT, env=subprocess_env(**self.env()),
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """One query on a connection kept between calls (the waits poll every 10 ms)."""
        if self._conn is None:
            self._conn = self.pg.connect()
        try:
            return list(self._conn.execute(query, params).fetchall())
        except Exception:
            self.close_sql()
            raise

    def close_sql(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def version(self) -> int:
        return int(self.sql("SELECT COALESCE(MAX(value), 0) FROM steering_stateversion")[0][0])

    def logs(self) -> str:
        parts = [("web", self.web.log()), *((p.role, p.log()) for p in (self.worker, self.beat) if p is not None),
                 ("postgres", self.pg.log())]
        return "\n".join(f"--- {name} ---\n{text[-2000:]}" for name, text in parts)
