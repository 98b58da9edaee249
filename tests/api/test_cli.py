"""steerctl against a running server: the installed console script, run as a deploy pipeline runs it.

The server is pytest-django's live_server (the WSGI app in a thread, on 127.0.0.1, on the test
database); a background thread calling sweep_due() every 0.2 s stands in for Celery beat.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from steering.cli import (
    EXIT_CODES,
    EXIT_CONFLICT,
    EXIT_ERROR,
    EXIT_GUARD,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNCONFIRMED,
    EXIT_USAGE,
)
from steering.cli.client import Client, new_idempotency_key
from steering.models import Backend, Change, IdempotencyRecord, Operation, Pool
from steering.services.operations import sweep_due
from tests import factories as f
from tests.api.conftest import BIN_DIR
from tests.conftest import make_user, token_client


@pytest.fixture
def token(live_server: Any) -> str:
    return str(token_client(make_user("deploy-bot", "operator")).raw_token)


@pytest.fixture
def cli_env(live_server: Any, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERING_")}
    return {**env, "STEERING_URL": live_server.url, "STEERING_TOKEN": token,
            "PATH": f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"}


@pytest.fixture
def steerctl(steerctl_path: str, cli_env: dict[str, str], token: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([steerctl_path, *args], env=cli_env, capture_output=True, text=True, timeout=60)
        assert token not in done.stdout + done.stderr, "the token must never be printed"
        return done

    return run


@pytest.fixture
def sweeper(live_server: Any) -> Iterator[None]:
    """Celery beat's stand-in: sweep due timers every 0.2 s until the test ends."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while not stop.is_set():
                sweep_due()
                stop.wait(0.2)
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=loop, name="test-sweeper", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive() and not errors, errors


def bom1(backends: int = 4, *, capacity_rps: int = 1000, expected_rps: int = 2000) -> Pool:
    """bom1/api-web/api-1..N in region ap-south: named the way the CLI addresses them."""
    site = f.pop(f.region(slug="ap-south"), slug="bom1")
    pool = f.pool(site, slug="api-web", expected_rps=expected_rps)
    for i in range(1, backends + 1):
        f.backend(pool, name=f"api-{i}", capacity_rps=capacity_rps)
    return pool


DEPLOY_SCRIPT = """#!/usr/bin/env bash
# One deploy step: take the backend out, deploy, put it back; branch on steerctl's exit codes.
set -uo pipefail
BACKEND=bom1/api-web/api-3
export STEERING_REASON="deploy 1.4.2"
steerctl drain "$BACKEND" --grace 1 --wait --timeout 20
rc=$?
case $rc in
  0) echo "drained $BACKEND" ;;
  3) echo "capacity guard refused: not deploying" >&2; exit 3 ;;
  4) echo "drain did not finish in time" >&2; exit 4 ;;
  *) echo "drain failed ($rc)" >&2; exit "$rc" ;;
esac
echo "deploying 1.4.2 to $BACKEND"
steerctl undrain "$BACKEND" --reason "deploy 1.4.2 done" --wait --timeout 20 || exit $?
echo "undrained $BACKEND"
"""


def test_a_deploy_script_drains_waits_and_undrains(tmp_path: Path, cli_env: dict[str, str], sweeper: None) -> None:
    pool = bom1()
    script = tmp_path / "deploy.sh"
    script.write_text(DEPLOY_SCRIPT)
    done = subprocess.run(["bash", str(script)], env=cli_env, capture_output=True, text=True, timeout=90)
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert "drained bom1/api-web/api-3" in done.stdout and "undrained bom1/api-web/api-3" in done.stdout
    backend = Backend.objects.get(pool=pool, name="api-3")
    assert backend.admin_state == "ready"
    drain_op = Operation.objects.get(kind="drain", target_id=backend.pk)
    # steerctl authenticates with a token: source api (what a client says about itself is not trusted).
    assert (drain_op.status, drain_op.source) == ("succeeded", "api")
    # --wait returned only after the sweeper completed the drain at its deadline.
    drained = Change.objects.get(action="backend.drained", object_id=backend.pk)
    assert drained.actor_name == "system:sweeper"
    mine = Change.objects.filter(actor_name="deploy-bot")
    assert set(mine.values_list("action", flat=True)) >= {"backend.drain", "backend.undrain"}
    assert set(mine.values_list("source", flat=True)) == {"api"}
    assert mine.get(action="backend.drain").reason == "deploy 1.4.2"


def test_a_drain_no_data_plane_acknowledged_exits_7_and_says_why(steerctl: Any, sweeper: None,
                                                                 settings: Any) -> None:
    settings.STEERING_DATAPLANE_CONFIRM = True
    settings.STEERING_DATAPLANE_ACK_TIMEOUT_SECONDS = 1
    pool = bom1()
    done = steerctl("drain", "bom1/api-web/api-2", "--grace", "0", "--wait", "--timeout", "30", "--reason", "r")
    assert done.returncode == EXIT_UNCONFIRMED, done.stdout + done.stderr
    assert "bom1 HAProxy has not applied version" in done.stderr
    op = Operation.objects.get(kind="drain", target_id=Backend.objects.get(pool=pool, name="api-2").pk)
    assert op.status == "unconfirmed"


def test_the_guard_refusal_exits_3_and_force_with_a_reason_exits_0(steerctl: Any) -> None:
    pool = bom1(capacity_rps=1000, expected_rps=3600)  # losing one puts 1200 on each survivor
    dry = steerctl("drain", "bom1/api-web/api-1", "--reason", "deploy", "--dry-run")
    assert dry.returncode == EXIT_GUARD, dry.stderr
    refused = steerctl("drain", "bom1/api-web/api-1", "--reason", "deploy")
    assert refused.returncode == EXIT_GUARD, refused.stdout + refused.stderr
    assert "capacity guard" in refused.stderr
    overloaded = [line for line in refused.stderr.splitlines() if line.strip().startswith("OVER")]
    assert len(overloaded) == 3 and all("1200/1000 req/s" in line for line in overloaded), refused.stderr
    assert not Change.objects.filter(action__startswith="backend.").exists()
    assert steerctl("drain", "bom1/api-web/api-1", "--reason", "deploy", "--force").returncode == EXIT_USAGE
    forced = steerctl("drain", "bom1/api-web/api-1", "--reason", "deploy", "--force",
                      "--force-reason", "peak is over, accepting 20% over capacity")
    assert forced.returncode == EXIT_OK, forced.stderr
    change = Change.objects.get(action="backend.drain", object_id=pool.backends.get(name="api-1").pk)
    assert change.forced and change.source == "api"


def test_wait_gives_up_with_exit_4(steerctl: Any) -> None:
    bom1()
    started = steerctl("drain", "bom1/api-web/api-2", "--reason", "long drain", "--grace", "600", "--json")
    assert started.returncode == EXIT_OK, started.stderr
    op_id = json.loads(started.stdout)["operation"]["id"]
    waited = steerctl("wait", str(op_id), "--timeout", "1")
    assert waited.returncode == EXIT_TIMEOUT, waited.stdout + waited.stderr
    assert f"steerctl wait {op_id}" in waited.stderr
    assert Operation.objects.get(pk=op_id).status == "running"


def test_draining_an_already_draining_backend_exits_5(steerctl: Any) -> None:
    bom1()
    assert steerctl("drain", "bom1/api-web/api-1", "--reason", "r", "--grace", "600").returncode == EXIT_OK
    again = steerctl("drain", "bom1/api-web/api-1", "--reason", "r")
    assert again.returncode == EXIT_CONFLICT, again.stdout + again.stderr
    assert "already_draining" in again.stderr
    assert steerctl("undrain", "bom1/api-web/api-2", "--reason", "r").returncode == EXIT_CONFLICT  # already_ready


@pytest.mark.parametrize(("target", "message"), [
    ("nowhere", "no PoP named 'nowhere'"),
    ("bom1/nope", "no pool 'nope' in PoP bom1"),
    ("nowhere/api-web/api-1", "no PoP named 'nowhere'"),
    ("bom1/api-web/api-99", "no backend 'api-99' in pool bom1/api-web"),
    ("region:atlantis", "no region named 'atlantis'"),
    ("backend:999999", "no backend with id 999999"),
])
def test_an_unknown_name_exits_1_and_says_what_is_missing(steerctl: Any, target: str, message: str) -> None:
    bom1()
    done = steerctl("drain", target, "--reason", "r")
    assert done.returncode == EXIT_ERROR
    assert message in done.stderr
    assert not Change.objects.filter(action__startswith="backend.").exists()


def test_json_output_parses_for_actions_status_and_impact(steerctl: Any) -> None:
    pool = bom1()
    drained = steerctl("--json", "drain", "bom1/api-web/api-1", "--reason", "r", "--grace", "600")
    body = json.loads(drained.stdout)
    assert set(body) == {"operation", "impact"} and body["operation"]["source"] == "api"
    status = json.loads(steerctl("status", "bom1/api-web/api-1", "--json").stdout)
    assert status["object"]["admin_state"] == "draining" and status["operation"]["id"] == body["operation"]["id"]
    site = json.loads(steerctl("status", "region:ap-south", "--json").stdout)
    assert site["backends"]["total"] == 4 and site["backends"]["admin_state"]["draining"] == 1
    impact = json.loads(steerctl("impact", f"pool:{pool.pk}", "--json").stdout)
    assert impact["verdict"] == "outage"
    conflict = steerctl("--json", "drain", "bom1/api-web/api-1", "--reason", "r")
    assert json.loads(conflict.stdout)["code"] == "already_draining"


def test_impact_and_status_print_a_human_summary(steerctl: Any) -> None:
    bom1(capacity_rps=1000, expected_rps=3600)
    safe = steerctl("impact", "bom1/api-web/api-1", "--action", "undrain")
    assert safe.returncode == EXIT_OK and "verdict: safe" in safe.stdout
    over = steerctl("impact", "bom1/api-web/api-1")
    assert "verdict: overload" in over.stdout and "1200/1000 req/s" in over.stdout
    assert "verdict: outage" in steerctl("impact", "bom1").stdout
    status = steerctl("status", "bom1/api-web/api-2")
    assert "admin_state: ready" in status.stdout and "health: unknown" in status.stdout
    assert "backends: 4 (ready 4)" in steerctl("status", "pop:bom1").stdout


def test_usage_configuration_and_token_file(steerctl: Any, steerctl_path: str, cli_env: dict[str, str],
                                            tmp_path: Path) -> None:
    bom1()
    assert steerctl("drain", "bom1/api-web/api-1").returncode == EXIT_USAGE  # no --reason
    assert steerctl("weight", "bom1/api-web", "10", "--reason", "r").returncode == EXIT_ERROR  # not a backend
    env = {**cli_env, "STEERING_TOKEN": "not-a-token"}
    bad = subprocess.run([steerctl_path, "status", "bom1"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == EXIT_ERROR and "Unknown token" in bad.stderr and "not-a-token" not in bad.stderr
    token_file = tmp_path / "token"
    token_file.write_text(cli_env["STEERING_TOKEN"] + "\n")
    env = {k: v for k, v in cli_env.items() if k != "STEERING_TOKEN"}
    assert subprocess.run([steerctl_path, "status", "bom1"], env=env, capture_output=True, timeout=60).returncode == EXIT_ERROR
    weighted = subprocess.run([steerctl_path, "weight", "bom1/api-web/api-1", "50", "--reason", "canary",
                               "--token-file", str(token_file)], env=env, capture_output=True, text=True, timeout=60)
    assert weighted.returncode == EXIT_OK, weighted.stderr
    helptext = steerctl("--help").stdout
    assert all(f"  {code}  {meaning}" in helptext for code, meaning in EXIT_CODES)


def test_the_same_idempotency_key_never_drains_twice(live_server: Any, token: str) -> None:
    pool = bom1()
    backend = pool.backends.get(name="api-1")
    client = Client(live_server.url, token)
    key = new_idempotency_key()
    path = f"/api/v1/backends/{backend.pk}/drain/"
    first = client.post(path, {"reason": "deploy", "grace_seconds": 600}, idempotency_key=key)
    second = client.post(path, {"reason": "deploy", "grace_seconds": 600}, idempotency_key=key)
    assert first.status == second.status == 202
    assert first.body["operation"]["id"] == second.body["operation"]["id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert Operation.objects.count() == 1 and Change.objects.filter(action="backend.drain").count() == 1


class _LosesFirstAnswer(http.server.BaseHTTPRequestHandler):
    """A gateway that forwards every request but answers the first POST with 502, as if the
    server's answer were lost on the way back: the client must retry, and must not act twice."""

    upstream = ""
    posts = 0
    keys: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._forward(None)

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).posts += 1
        type(self).keys.append(self.headers.get("Idempotency-Key", ""))
        self._forward(body, reply=type(self).posts > 1)
        if type(self).posts == 1:
            self._reply(502, b'{"detail": "bad gateway"}')

    def _forward(self, body: bytes | None, reply: bool = True) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        req = urllib.request.Request(self.upstream + self.path, data=body, headers=headers, method=self.command)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, payload, replayed = resp.status, resp.read(), resp.headers.get("Idempotent-Replayed")
        except urllib.error.HTTPError as exc:
            status, payload, replayed = exc.code, exc.read(), None
        if reply:
            self._reply(status, payload, replayed)

    def _reply(self, status: int, payload: bytes, replayed: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if replayed:
            self.send_header("Idempotent-Replayed", replayed)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


def test_a_retry_after_a_lost_answer_reuses_the_key_and_acts_once(live_server: Any, token: str) -> None:
    pool = bom1()
    handler = type("Gateway", (_LosesFirstAnswer,), {"upstream": live_server.url, "posts": 0, "keys": []})
    gateway = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=gateway.serve_forever, daemon=True).start()
    try:
        client = Client(f"http://127.0.0.1:{gateway.server_address[1]}", token, sleep=lambda _s: None)
        backend = pool.backends.get(name="api-1")
        answer = client.post(f"/api/v1/backends/{backend.pk}/drain/", {"reason": "deploy", "grace_seconds": 600},
                             idempotency_key=new_idempotency_key())
        assert answer.status == 202 and answer.headers.get("Idempotent-Replayed") == "true"
        assert handler.posts == 2 and len(set(handler.keys)) == 1  # the retry carried the same key
        assert Operation.objects.count() == 1 and IdempotencyRecord.objects.count() == 1
        assert Change.objects.filter(action="backend.drain").count() == 1
    finally:
        gateway.shutdown()
        gateway.server_close()


def test_freeze_on_refuses_a_deploy_with_the_reason_and_off_lifts_it(steerctl: Any, steerctl_path: str,
                                                                    cli_env: dict[str, str]) -> None:
    bom1()
    admin_env = {**cli_env, "STEERING_TOKEN": str(token_client(make_user("sre-admin", "admin")).raw_token)}

    def as_admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([steerctl_path, *args], env=admin_env, capture_output=True, text=True, timeout=60)

    assert steerctl("freeze", "on").returncode == EXIT_USAGE  # the reason is required
    assert steerctl("freeze", "on", "--reason", "an operator tries").returncode == EXIT_ERROR  # admins only
    on = as_admin("freeze", "on", "--reason", "holiday freeze")
    assert on.returncode == EXIT_OK and "changes frozen" in on.stdout and "holiday freeze" in on.stdout, on.stderr
    refused = steerctl("drain", "bom1/api-web/api-1", "--reason", "deploy 1.4.2")
    assert refused.returncode == EXIT_CONFLICT, refused.stdout + refused.stderr
    assert "frozen" in refused.stderr and "holiday freeze" in refused.stderr
    assert "holiday freeze" in steerctl("freeze", "status").stdout
    assert as_admin("freeze", "off", "--reason", "holidays over").returncode == EXIT_OK
    assert steerctl("freeze", "status").stdout.strip() == "changes allowed (not frozen)"
    assert steerctl("drain", "bom1/api-web/api-1", "--reason", "deploy 1.4.2").returncode == EXIT_OK
    assert list(Change.objects.filter(action__startswith="changefreeze.").order_by("pk").values_list("action", "reason")) == [
        ("changefreeze.on", "holiday freeze"), ("changefreeze.off", "holidays over")]


def test_a_maintenance_window_from_a_pipeline_starts_later_and_ends_by_itself(steerctl: Any) -> None:
    import datetime

    from django.utils import timezone

    pool = bom1()
    start, end = (timezone.now() + datetime.timedelta(hours=h) for h in (1, 3))
    done = steerctl("maintenance", "bom1/api-web/api-2", "--reason", "kernel", "--not-before", start.isoformat(),
                    "--expires-at", end.isoformat())
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    op = Operation.objects.get(kind="maintenance")
    assert (op.status, op.not_before, op.expires_at) == ("scheduled", start, end)
    assert Backend.objects.get(pool=pool, name="api-2").admin_state == "ready"
    bad = steerctl("drain", "bom1/api-web/api-3", "--reason", "kernel", "--expires-at", "yesterday")
    assert bad.returncode == 1 and "expires_at" in bad.stderr
