"""Production defaults: no serving process starts on a made-up SECRET_KEY outside a local install,
and secret files are private from their first byte."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from steering.privatefiles import read_or_create_secret, write_private
from tests.support import ROOT


def start(module: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "SECRET_KEY_FILE", "DEBUG",
                                                               "STEERING_LOCAL_SECRET_KEY")}
    base.update(DJANGO_SETTINGS_MODULE="config.settings", STEERING_VAR_DIR=str(tmp_path), **env)
    return subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, env=base, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("module", ["config.asgi", "config.wsgi"])
def test_the_web_refuses_a_made_up_key_unless_local_or_debug(module: str, tmp_path: Path) -> None:
    refused = start(module, tmp_path)
    assert refused.returncode != 0 and "SECRET_KEY (or SECRET_KEY_FILE) must be set" in refused.stderr
    assert start(module, tmp_path, SECRET_KEY="x" * 50).returncode == 0
    assert start(module, tmp_path, STEERING_LOCAL_SECRET_KEY="1").returncode == 0
    assert start(module, tmp_path, DEBUG="1").returncode == 0


@pytest.mark.parametrize("role", ["worker", "beat"])
def test_worker_and_beat_refuse_it_too(role: str, tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "SECRET_KEY_FILE", "DEBUG",
                                                               "STEERING_LOCAL_SECRET_KEY")}
    base.update(DJANGO_SETTINGS_MODULE="config.settings", STEERING_VAR_DIR=str(tmp_path))
    extra = ["--pool", "solo"] if role == "worker" else []
    refused = subprocess.run([sys.executable, "-m", "celery", "-A", "config", role, "--loglevel", "WARNING", *extra],
                             cwd=ROOT, env=base, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0, refused.stderr[-2000:]
    assert f"{role}: SECRET_KEY (or SECRET_KEY_FILE) must be set" in refused.stderr + refused.stdout


def test_the_made_up_key_is_private_random_and_shared_by_the_processes_of_one_install(tmp_path: Path) -> None:
    first = read_or_create_secret(tmp_path / "var" / "secret-key")
    again = read_or_create_secret(tmp_path / "var" / "secret-key")
    other = read_or_create_secret(tmp_path / "elsewhere" / "secret-key")
    assert first == again and first != other and len(first) >= 50
    assert stat.S_IMODE((tmp_path / "var" / "secret-key").stat().st_mode) == 0o600
    assert list((tmp_path / "var").iterdir()) == [tmp_path / "var" / "secret-key"]  # no temp file left


def test_a_private_file_is_never_readable_by_others_even_while_written(tmp_path: Path) -> None:
    target = tmp_path / "admin-password.txt"
    old_umask = os.umask(0o000)  # the most permissive umask: the file must still be 0600
    try:
        write_private(target, "s3cret\n")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == "s3cret\n"


def settings_under(tmp_path: Path, **env: str) -> dict[str, object]:
    code = ("import json, django; django.setup(); from django.conf import settings as s; print(json.dumps({k: "
            "getattr(s, k, None) for k in ('SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SECURE_HSTS_SECONDS', "
            "'SECURE_SSL_REDIRECT', 'SECURE_PROXY_SSL_HEADER', 'SESSION_COOKIE_AGE')}))")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("STEERING_HTTPS", "SECURE_", "STEERING_TRUST"))}
    base.update(DJANGO_SETTINGS_MODULE="config.settings", STEERING_VAR_DIR=str(tmp_path), **env)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=base, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_behind_https_cookies_are_secure_hsts_is_on_and_the_proxy_header_only_when_trusted(tmp_path: Path) -> None:
    plain = settings_under(tmp_path)
    assert plain["SESSION_COOKIE_SECURE"] is False and plain["SECURE_HSTS_SECONDS"] in (None, 0)
    assert plain["SESSION_COOKIE_AGE"] == 12 * 3600  # a shift
    https = settings_under(tmp_path, STEERING_HTTPS="1", STEERING_SESSION_HOURS="8")
    assert https["SESSION_COOKIE_SECURE"] is True and https["CSRF_COOKIE_SECURE"] is True
    assert https["SECURE_HSTS_SECONDS"] == 31_536_000 and https["SECURE_SSL_REDIRECT"] is True
    assert https["SECURE_PROXY_SSL_HEADER"] is None  # a client's X-Forwarded-Proto is not believed by default
    assert https["SESSION_COOKIE_AGE"] == 8 * 3600
    proxied = settings_under(tmp_path, STEERING_HTTPS="1", STEERING_TRUST_X_FORWARDED_PROTO="1")
    assert proxied["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


def test_every_answer_carries_the_policy_and_hsts_when_served_over_https(client: Any, settings: Any) -> None:
    settings.SECURE_HSTS_SECONDS = 31_536_000
    answer = client.get("/healthz", secure=True)
    assert answer["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "default-src 'self'" in answer["Content-Security-Policy"]
    assert client.get("/healthz")["X-Content-Type-Options"] == "nosniff"
