"""steerctl export / plan / apply / drift against a running server (pytest-django's live_server on
127.0.0.1), the way a pipeline keeps the fleet as code: export once, edit, plan, apply, check drift."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from steering.cli import EXIT_ERROR, EXIT_GUARD, EXIT_OK, EXIT_STALE, EXIT_USAGE
from steering.models import Backend, Change, Operation, PoP
from tests import factories as f
from tests.api.conftest import BIN_DIR
from tests.conftest import make_user, token_client

Run = Callable[..., subprocess.CompletedProcess[str]]


def _runner(path: str, live_server: Any, token: str) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERING_")}
    env = {**env, "STEERING_URL": live_server.url, "STEERING_TOKEN": token,
           "PATH": f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([path, *args], env=env, capture_output=True, text=True, timeout=60, input=stdin)
        assert token not in done.stdout + done.stderr, "the token must never be printed"
        return done

    return run


@pytest.fixture
def admin_ctl(steerctl_path: str, live_server: Any) -> Run:
    return _runner(steerctl_path, live_server, str(token_client(make_user("fleet-admin", "admin")).raw_token))


@pytest.fixture
def viewer_ctl(steerctl_path: str, live_server: Any) -> Run:
    return _runner(steerctl_path, live_server, str(token_client(make_user("fleet-viewer", "viewer")).raw_token))


def bom1() -> None:
    site = f.pop(f.region(slug="ap-south", name="South", latitude=17.0, longitude=77.0), slug="bom1")
    pool = f.pool(site, f.service(slug="api", fqdn="api.example.net"), slug="api-web", expected_rps=1800)
    for i in (1, 2, 3):
        f.backend(pool, name=f"api-{i}", address=f"127.1.1.{i}", capacity_rps=1000)


def test_export_edit_plan_apply_drift(admin_ctl: Run, viewer_ctl: Run, tmp_path: Path) -> None:
    bom1()
    exported = viewer_ctl("export")
    assert exported.returncode == EXIT_OK, exported.stderr
    assert exported.stdout.startswith("# Steering fleet file")
    path = tmp_path / "fleet.yaml"
    path.write_text(exported.stdout)
    unchanged = viewer_ctl("plan", str(path))
    assert unchanged.returncode == EXIT_OK and unchanged.stdout.startswith("no changes")
    # Edit the file as a person would: raise a weight, add a backend.
    document = yaml.safe_load(path.read_text())
    document["pools"][0]["backends"][0]["weight"] = 150
    document["pools"][0]["backends"].append({"name": "api-4", "address": "127.1.1.4", "port": 8080,
                                             "capacity_rps": 1000})
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    planned = viewer_ctl("plan", str(path))
    assert planned.returncode == EXIT_OK, planned.stdout + planned.stderr
    assert "1 to create, 1 to update, 0 to delete" in planned.stdout
    assert "~ backend bom1/api-web/api-1" in planned.stdout and "    weight: 100 -> 150" in planned.stdout
    assert "+ backend bom1/api-web/api-4" in planned.stdout
    denied = viewer_ctl("apply", str(path), "--reason", "add api-4")
    assert denied.returncode == EXIT_ERROR and "admin" in denied.stderr
    applied = admin_ctl("apply", str(path), "--reason", "add api-4")
    assert applied.returncode == EXIT_OK, applied.stdout + applied.stderr
    assert "applied: operation" in applied.stdout and "1 created, 1 updated, 0 deleted" in applied.stdout
    op = Operation.objects.get(kind="fleet_apply")
    assert op.reason == "add api-4" and op.actor_name == "fleet-admin" and op.source == "api"
    assert Backend.objects.get(name="api-4").capacity_rps == 1000
    assert viewer_ctl("drift").stdout.startswith("in sync with the fleet file applied by operation")
    # A hand edit shows as drift, with who made it.
    backend = Backend.objects.get(name="api-2")
    operator = token_client(make_user("hand-editor", "admin"))
    operator.patch(f"/api/v1/backends/{backend.pk}/", {"version": "1.4.2"}, format="json",
                   HTTP_X_CHANGE_REASON="hotfix")
    drift = viewer_ctl("drift")
    assert "~ backend bom1/api-web/api-2" in drift.stdout and "version: file '', live 1.4.2" in drift.stdout
    assert "by hand-editor (api)" in drift.stdout and "backend.update: hotfix" in drift.stdout
    as_json = json.loads(viewer_ctl("drift", "--json").stdout)
    assert as_json["state"] == "drifted" and as_json["differences"][0]["changed_by"][0]["actor"] == "hand-editor"


def test_the_guard_refuses_with_exit_3_and_force_needs_a_reason(admin_ctl: Run, tmp_path: Path) -> None:
    bom1()
    document = yaml.safe_load(admin_ctl("export").stdout)
    document["pools"][0]["backends"] = document["pools"][0]["backends"][:1]  # 1800 req/s onto 1000
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(document))
    planned = admin_ctl("plan", str(path))
    assert planned.returncode == EXIT_GUARD
    assert "(takes capacity away)" in planned.stdout and "OVER backend bom1/api-web/api-1" in planned.stdout
    refused = admin_ctl("apply", str(path), "--reason", "shrink")
    assert refused.returncode == EXIT_GUARD and "capacity_guard" in refused.stderr
    assert Backend.objects.count() == 3
    usage = admin_ctl("apply", str(path), "--reason", "shrink", "--force")
    assert usage.returncode == EXIT_USAGE
    assert admin_ctl("apply", str(path)).returncode == EXIT_USAGE  # no reason
    forced = admin_ctl("apply", str(path), "--reason", "shrink", "--force", "--force-reason", "load moves away")
    assert forced.returncode == EXIT_OK, forced.stderr
    assert "forced past the capacity guard" in forced.stdout and Backend.objects.count() == 1


def test_a_reviewed_plan_is_applied_only_if_the_fleet_did_not_move(admin_ctl: Run, tmp_path: Path) -> None:
    bom1()
    path = tmp_path / "fleet.yaml"
    path.write_text(admin_ctl("export").stdout)
    reviewed = json.loads(admin_ctl("plan", str(path), "--json").stdout)["fingerprint"]
    PoP.objects.filter(slug="bom1").update(city="Bombay")  # someone edits the fleet after the review
    stale = admin_ctl("apply", str(path), "--reason", "r", "--if-match", reviewed)
    assert stale.returncode == EXIT_STALE and "stale" in stale.stderr
    assert not Operation.objects.exists()


def test_a_broken_file_says_where_and_changes_nothing(admin_ctl: Run, tmp_path: Path) -> None:
    bom1()
    document = yaml.safe_load(admin_ctl("export").stdout)
    document["pools"][0]["backends"][1]["port"] = "https"
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(document))
    changes = Change.objects.count()
    for args in (("plan", str(path)), ("apply", str(path), "--reason", "r")):
        done = admin_ctl(*args)
        assert done.returncode == EXIT_ERROR
        assert "/pools/0/backends/1/port: 'https' is not of type 'integer'" in done.stderr
    from_stdin = admin_ctl("plan", "-", stdin="version: 1\nregions: [\n")
    assert from_stdin.returncode == EXIT_ERROR and "Not valid YAML: line 3" in from_stdin.stderr
    missing = admin_ctl("plan", str(tmp_path / "nope.yaml"))
    assert missing.returncode == EXIT_ERROR and "cannot read" in missing.stderr
    assert Change.objects.count() == changes
