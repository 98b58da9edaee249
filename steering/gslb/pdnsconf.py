"""Render deploy/pdns/pdns.conf for a loopback pdns_server (demo, tests, benchmark) and start it.

The recommended file is the template: only the listen address/port and the backend URL change,
so what the tests run is what we tell operators to run.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "pdns" / "pdns.conf"


def render(text: str, overrides: Mapping[str, str]) -> str:
    """Replace `key=value` lines by key (appending keys the text lacks); comments stay."""
    pending = dict(overrides)
    lines = []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else None
        if key is not None and key in pending:
            lines.append(f"{key}={pending.pop(key)}")
        else:
            lines.append(line)
    lines += [f"{key}={value}" for key, value in pending.items()]
    return "\n".join(lines) + "\n"


def connection_string(backend_url: str) -> str:
    return f"http:url={backend_url},post=1,post_json=1,timeout=2000"


def write_config(config_dir: Path, *, port: int, backend_url: str, address: str = "127.0.0.1",
                 extra: Mapping[str, str] | None = None) -> Path:
    """pdns.conf in `config_dir`, from the template, serving on address:port from `backend_url`."""
    config_dir.mkdir(parents=True, exist_ok=True)
    overrides = {"local-address": address, "local-port": str(port),
                 "remote-connection-string": connection_string(backend_url), **(extra or {})}
    path = config_dir / "pdns.conf"
    path.write_text(render(TEMPLATE.read_text(), overrides))
    return path


def pdns_server_binary() -> str | None:
    return shutil.which("pdns_server") or shutil.which("pdns_server", path="/usr/sbin:/usr/local/sbin")


def pdns_command(binary: str, config_dir: Path, socket_dir: Path | None = None) -> list[str]:
    """pdns_server in the foreground, logging to stderr, with no guardian and no syslog."""
    return [binary, f"--config-dir={config_dir}", f"--socket-dir={socket_dir or config_dir}",
            "--daemon=no", "--guardian=no", "--disable-syslog", "--write-pid=no"]
