"""The recommended PowerDNS config, its rendering, and what `runstack` starts for DNS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from steering.gslb import demo, pdnsconf
from steering.gslb.server import parse_listen


def settings_of(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def test_the_recommended_config_says_what_we_promise():
    conf = settings_of(pdnsconf.TEMPLATE.read_text())
    assert conf["launch"] == "remote"
    assert conf["remote-connection-string"].startswith("http:url=http://127.0.0.1:")
    assert "post=1" in conf["remote-connection-string"] and "post_json=1" in conf["remote-connection-string"]
    assert conf["cache-ttl"] == "0" and conf["query-cache-ttl"] == "0" and int(conf["negquery-cache-ttl"]) <= 1
    assert conf["edns-subnet-processing"] == "yes"
    assert conf["security-poll-suffix"] == ""
    assert conf["local-address"] == "127.0.0.1"
    assert conf["consistent-backends"] == "no"  # one weighted pick per query, counted once
    assert (pdnsconf.TEMPLATE.parent / "README.md").exists()


def test_render_replaces_by_key_keeps_comments_and_appends_the_rest():
    text = "# launch=not-this\nlaunch=remote\nlocal-port=53\n"
    out = pdnsconf.render(text, {"local-port": "5353", "loglevel": "6"})
    assert out == "# launch=not-this\nlaunch=remote\nlocal-port=5353\nloglevel=6\n"


def test_write_config_points_powerdns_at_our_server(tmp_path: Path):
    path = pdnsconf.write_config(tmp_path / "pdns", port=15353, backend_url="http://127.0.0.1:18053/dns")
    conf = settings_of(path.read_text())
    assert conf["local-port"] == "15353" and conf["local-address"] == "127.0.0.1"
    assert conf["remote-connection-string"] == "http:url=http://127.0.0.1:18053/dns,post=1,post_json=1,timeout=2000"


def test_without_pdns_server_the_demo_says_dns_is_not_connected(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(demo, "pdns_server_binary", lambda: None)
    layer = demo.dns_layer("python", tmp_path / "manage.py", tmp_path, listen="127.0.0.1:8053", dns_port=5353)
    assert layer.commands == {}
    assert any("NOT CONNECTED" in line and "pdns_server is not installed" in line for line in layer.lines)


def test_with_pdns_server_the_demo_starts_both_and_says_how_to_dig(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(demo, "pdns_server_binary", lambda: "/usr/sbin/pdns_server")
    layer = demo.dns_layer("python", tmp_path / "manage.py", tmp_path, listen="127.0.0.1:8053", dns_port=5353,
                           api="http://127.0.0.1:8000")
    # The launcher keeps a DNS agent token and execs `python -m steering.agents gslb` following the API.
    assert layer.commands["gslb"][-5:] == ["gslb_server", "--listen", "127.0.0.1:8053", "--api", "http://127.0.0.1:8000"]
    pdns = layer.commands["pdns"]
    assert pdns[pdns.index("--wait") + 1] == "http://127.0.0.1:8053/healthz"
    assert pdns[pdns.index("--") + 1] == "/usr/sbin/pdns_server" and f"--config-dir={tmp_path / 'pdns'}" in pdns
    assert settings_of((tmp_path / "pdns" / "pdns.conf").read_text())["local-port"] == "5353"
    assert any("dig @127.0.0.1 -p 5353 api.example.net" in line for line in layer.lines)


def test_the_wait_wrapper_gives_up_on_a_server_that_never_answers():
    # Port 9 (discard) on loopback: nothing listens there in this sandbox, so it never answers 200.
    proc = subprocess.run([sys.executable, "-m", "steering.gslb.demo", "--wait", "http://127.0.0.1:9/healthz",
                           "--timeout", "0.5", "--", "/bin/true"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "did not answer" in proc.stderr


@pytest.mark.parametrize("bad", ["8053", "127.0.0.1:", "127.0.0.1:99999", "host:port"])
def test_listen_must_be_host_and_port(bad: str):
    with pytest.raises(ValueError):
        parse_listen(bad)
    assert parse_listen("127.0.0.1:8053") == ("127.0.0.1", 8053)
