"""What `manage.py runstack` starts for the DNS layer: the GSLB server and a loopback pdns_server.

`dns_layer()` returns the commands and the lines to print; runstack only merges them in. The GSLB
server is `manage.py gslb_server --api URL`, which keeps a DNS agent token in
VAR_DIR/gslb/agent.token (0600) and execs `python -m steering.agents gslb` with it: the process
that serves follows the control plane at URL through the agent contract, with no Django in it. When
pdns_server is not installed, no command is returned and the lines say the DNS layer is not
connected. `python -m steering.gslb.demo --wait URL -- CMD...` waits for the GSLB server to
answer before it execs CMD (PowerDNS exits if its backend is not there when it starts).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from steering import syspkgs
from steering.gslb.pdnsconf import pdns_command, pdns_server_binary, write_config


@dataclass
class DnsDemo:
    commands: dict[str, list[str]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def dns_layer(python: str, manage: Path, var_dir: Path, *, listen: str, dns_port: int,
              api: str = "http://127.0.0.1:8000") -> DnsDemo:
    binary = pdns_server_binary()
    if binary is None:
        return DnsDemo(lines=[
            "  DNS:              NOT CONNECTED: pdns_server is not installed",
            # The package names and the install command come from deploy/system-packages.txt.
            f"                    ({syspkgs.hint('pdns_server')}, then make run again)",
        ])
    config_dir = var_dir / "pdns"
    write_config(config_dir, port=dns_port, backend_url=f"http://{listen}/dns")
    gslb = [python, str(manage), "gslb_server", "--listen", listen, "--api", api]
    pdns = [python, "-m", "steering.gslb.demo", "--wait", f"http://{listen}/healthz", "--",
            *pdns_command(binary, config_dir)]
    return DnsDemo(
        commands={"gslb": gslb, "pdns": pdns},
        lines=[f"  DNS:              PowerDNS on 127.0.0.1:{dns_port} (remote backend: steering-agent gslb on {listen})",
               f"                    dig @127.0.0.1 -p {dns_port} api.example.net",
               f"                    dig @127.0.0.1 -p {dns_port} static.example.net +subnet=198.18.2.0/24"],
    )


def wait_for(url: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback URL we built)
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wait", required=True, help="URL that must answer 200 first")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default %(default)s)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    if not wait_for(args.wait, args.timeout):
        sys.exit(f"{args.wait} did not answer within {args.timeout:g} s; not starting {command[0]}")
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
