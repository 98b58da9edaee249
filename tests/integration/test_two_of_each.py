"""Two of each: an install with no single process to lose runs two web processes, two workers of
each kind (the timers' queue and the probe shards') and two Celery beats, on one database and one
Redis. Nothing may then happen twice: no timer fires twice, no probe wave goes out twice.

Every process is real (uvicorn, `celery -A config worker|beat`) against the test database and
Redis. The backends are small HTTP servers in this process that count the monitor's requests.
Drains are posted through the API, alternately to each web process. Checked:
- every drain completes exactly once (one `backend.drained` Change), never early, within 2 s of
  its deadline (the same bound as a single worker: tests/integration/test_timer_durability.py);
- each backend is probed about once per monitor interval, not twice (a second beat or a second
  probes worker sending its own wave would double it), and not starved either;
- one beat holds RedBeat's lock and sends, the other stands by and sends nothing.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from steering.choices import Role
from steering.models import Backend, Change
from steering.services.context import Actor
from steering.services.tokens import do_create_token
from tests import factories as f
from tests.processes import CeleryProcess, WebProcess
from tests.support import wait_for

pytestmark = pytest.mark.integration

BACKENDS = 8
DRAINS = 6                # the first six backends drain; the other two stay in service
INTERVAL = 1.0            # the monitor's interval
WINDOW = 12.0             # probe requests are counted over this long
SEND = re.compile(r"Scheduler: Sending due task (\S+)")


class Counting(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler) -> None:  # noqa: N802, N805  (the server is `self`)
                with self.lock:
                    self.hits[handler.path] += 1
                handler.send_response(200)
                handler.send_header("Content-Length", "2")
                handler.end_headers()
                handler.wfile.write(b"ok")

            def log_message(handler, *args: Any) -> None:  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def probes(self) -> int:
        with self.lock:
            return self.hits["/healthz"]


def drain(web: WebProcess, token: str, backend_id: int, grace: int) -> float:
    """POST a drain; the time of its answer."""
    request = urllib.request.Request(
        f"{web.url}/api/v1/backends/{backend_id}/drain/", method="POST",
        data=json.dumps({"reason": "two of each", "grace_seconds": grace}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (loopback)
        assert answer.status == 202, answer.status
    return time.time()


@pytest.mark.django_db(transaction=True)
def test_two_of_each_process_run_together_and_nothing_happens_twice(tmp_path: Path) -> None:
    servers = [Counting() for _ in range(BACKENDS)]
    monitor = f.monitor(kind="http", path="/healthz", interval_seconds=INTERVAL, timeout_seconds=0.5, rise=1, fall=3)
    pool = f.pool(monitor=monitor, expected_rps=10, min_healthy_percent=10, outlier_detection=False)
    backends = [f.backend(pool, address="127.0.0.1", port=s.server_address[1], capacity_rps=1000, health="up")
                for s in servers]
    operator = User.objects.create_user("two-of-each")
    operator.groups.add(Group.objects.get_or_create(name="operator")[0])
    token = do_create_token(operator, name="two-of-each", role=Role.OPERATOR, actor=Actor.system("test"))[1]

    procs: list[CeleryProcess] = []
    webs: list[WebProcess] = []
    try:
        webs = [WebProcess(tmp_path).start(), WebProcess(tmp_path).start()]
        for i in (1, 2):
            procs.append(CeleryProcess("worker", tmp_path, "--queues", "celery", "--concurrency", "2",
                                       "-n", f"timers{i}@%h"))
            procs.append(CeleryProcess("worker", tmp_path, "--queues", "probes", "--concurrency", "2",
                                       "-n", f"probes{i}@%h"))
        beats = [CeleryProcess("beat", tmp_path), CeleryProcess("beat", tmp_path)]
        procs += beats
        wait_for(lambda: all(s.probes() >= 2 for s in servers), "every backend probed twice", timeout=90,
                 interval=0.2)

        # Drains through both web processes, deadlines 3-5 s out, while the probes are counted.
        before = [s.probes() for s in servers]
        counting_from = time.monotonic()
        answered = {b.pk: drain(webs[i % 2], token, b.pk, 3 + i % 3) for i, b in enumerate(backends[:DRAINS])}
        time.sleep(max(0.0, WINDOW - (time.monotonic() - counting_from)))
        counted = [s.probes() - b for s, b in zip(servers, before, strict=True)]
        seconds = time.monotonic() - counting_from
        wait_for(lambda: not Backend.objects.filter(pk__in=answered, admin_state="draining").exists(),
                 "every drain to complete", timeout=30, interval=0.25)
        beat_logs = [b.log() for b in beats]
    finally:
        for proc in reversed(procs):
            proc.stop()
        for web in webs:
            web.stop()
        for server in servers:
            server.shutdown()

    # No timer twice: one completion per drain, on time.
    lateness = []
    for backend_id in answered:
        completions = list(Change.objects.filter(action="backend.drained", object_id=backend_id))
        assert len(completions) == 1, f"backend {backend_id}: {len(completions)} completions audited"
        deadline = timezone.datetime.fromisoformat(completions[0].before["drain_deadline"])
        lateness.append((completions[0].time - deadline).total_seconds())
    # No probe wave twice: about one probe per interval per backend (a drained backend is still probed).
    expected = seconds / INTERVAL
    sent = [Counter(SEND.findall(log)) for log in beat_logs]
    print(f"\ntwo of each: {len(answered)} drains completed {min(lateness):+.2f}..{max(lateness):+.2f} s from "
          f"their deadlines; probes per backend in {seconds:.1f} s at {INTERVAL:g} s: {counted} "
          f"(one wave: {expected:.1f}); beat sends: {[sum(c.values()) for c in sent]}")
    assert min(lateness) >= 0, lateness
    assert max(lateness) <= 2.0, lateness
    assert all(0.6 * expected <= n <= 1.3 * expected + 1 for n in counted), (counted, expected)
    assert sorted(sum(c.values()) > 0 for c in sent) == [False, True], \
        f"exactly one beat sends: {[dict(c) for c in sent]}"
