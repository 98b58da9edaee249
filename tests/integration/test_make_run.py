"""What `make run` runs, end to end: `manage.py runstack --setup` on a fresh var directory brings up
the web process, Celery, the demo backends, one HAProxy per demo PoP, PowerDNS with the GSLB
server, and BIRD with one ExaBGP per PoP, all on loopback; GET /api/v1/dataplanes/ then says the
local, dns and anycast layers are connected. Stopped as Ctrl-C stops it, nothing it started is
left running.

The embedded defaults, as on a fresh machine: no DATABASE_URL (SQLite in the var directory) and
no REDIS_URL (runstack's private Redis), whatever database the suite itself runs on. Only the
ports that could collide with another stack on this machine are moved: the web server's, the GSLB
server's and PowerDNS's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from steering import syspkgs
from steering.dataplane.exabgp.lab import exabgp_binary
from tests.support import ROOT, free_port, missing

pytestmark = pytest.mark.integration

LAYERS = ("local", "dns", "anycast")
CONNECTED_WITHIN_SECONDS = 80  # from a fresh var directory: migrate, seed, then every layer (README: ~15 s warm)
STOP_WITHIN_SECONDS = 30


def stack_env(var_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(STEERING_VAR_DIR=str(var_dir), PORT=str(port), STEERING_LOCAL_SECRET_KEY="1",
               STEERING_INSTALL_SYSTEM_PACKAGES="0",  # a test installs nothing; .ci/run did
               STEERING_GSLB_LISTEN=f"127.0.0.1:{free_port()}", STEERING_DNS_PORT=str(free_port()),
               PYTHONUNBUFFERED="1")
    return env


def descendants(root: int) -> dict[int, str]:
    """Every live process under `root` (children start sessions of their own), by pid, with its
    start time from /proc (so a reused pid is not mistaken for ours)."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        started[int(entry.name)] = fields[19]
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = started[child]
            todo.append(child)
    return found


def still_running(processes: dict[int, str]) -> list[str]:
    alive = []
    for pid, start in processes.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name, rest = stat.split("(", 1)[1].rsplit(")", 1)
        if rest.split()[19] == start and rest.split()[0] != "Z":
            alive.append(f"{pid} {name}")
    return alive


def api(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (our loopback server)
        return json.loads(response.read())


def test_make_run_connects_every_layer_and_leaves_nothing_running(tmp_path: Path) -> None:
    # The same list `make run` installs from: a missing package fails here in CI, skips elsewhere.
    absent = syspkgs.plan(syspkgs.read_list(), "run", allowed=False).missing
    if absent:
        missing(f"system packages {', '.join(absent)} are not installed: {syspkgs.install_command()}")
    if exabgp_binary() is None:
        missing("exabgp is not installed (pip install -r requirements-dev.txt)")
    var_dir, port = tmp_path / "var", free_port()
    env = stack_env(var_dir, port)
    log_path = tmp_path / "runstack.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "manage.py", "runstack", "--setup"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    seen: dict[int, str] = {}
    layers: dict[str, Any] = {}
    try:
        token = ""
        deadline = started + CONNECTED_WITHIN_SECONDS
        while time.monotonic() < deadline and proc.poll() is None:
            seen.update(descendants(proc.pid))
            if not token and (var_dir / "admin-password.txt").exists():  # ensure_admin is done
                made = subprocess.run([sys.executable, "manage.py", "create_token", "admin", "--role", "viewer",
                                       "--name", "make-run-test"], cwd=ROOT, env=env, capture_output=True,
                                      text=True, timeout=60)
                token = made.stdout.strip() if made.returncode == 0 else ""
            if token:
                try:
                    layers = api(f"http://127.0.0.1:{port}/api/v1/dataplanes/", token)
                except (urllib.error.URLError, OSError, ValueError):
                    layers = {}
                if all(layers.get(name, {}).get("connected") for name in LAYERS):
                    break
            time.sleep(1)
        took = time.monotonic() - started
        seen.update(descendants(proc.pid))
        log = log_path.read_text(errors="replace")
        assert proc.poll() is None, f"runstack exited with {proc.returncode}:\n{log[-4000:]}"
        assert {name: layers.get(name, {}).get("connected") for name in LAYERS} == dict.fromkeys(LAYERS, True), (
            f"not every layer connected within {took:.0f} s: {layers}\n{log[-4000:]}")
        assert "steering is up:" in log and "NOT CONNECTED" not in log and "DEGRADED" not in log, log[-4000:]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends
        try:
            proc.wait(timeout=STOP_WITHIN_SECONDS)
        except subprocess.TimeoutExpired:
            leftover = still_running(seen)
            proc.kill()
            for line in leftover:  # ours only: processes recorded under runstack, same pid and start time
                try:
                    os.kill(int(line.split()[0]), signal.SIGKILL)
                except OSError:
                    pass
            proc.wait(timeout=10)
            pytest.fail(f"runstack did not stop within {STOP_WITHIN_SECONDS} s; left running: {leftover}")
    assert proc.returncode == 0, log_path.read_text(errors="replace")[-3000:]
    assert "stopped" in log_path.read_text(errors="replace")
    # Its process group is gone, and so is every process it started (each in a session of its own).
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    assert len(seen) >= 10, seen  # web, worker, beat, Redis, agents, HAProxy, PowerDNS, BIRD, ExaBGP...
    deadline = time.monotonic() + 10
    while still_running(seen) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert still_running(seen) == []
