"""The Debian packages steering drives (deploy/system-packages.txt): which are missing here, and
whether this user can install them.

Standard library only: CI runs it with the system python3 before the virtualenv exists.

    python3 -m steering.syspkgs check   [--for run|test|ci]   the missing ones, one a line (exit 1 if any)
    python3 -m steering.syspkgs install [--for run|test|ci]   install the missing ones (exit 1 if it cannot)
    python3 -m steering.syspkgs ensure  [--for run|test|ci]   install them if this user can, else say how (exit 0)

`make run` (before it builds the dashboard, and runstack --setup for its banner) and `make test`
call ensure() for the `run` and the `test` packages: when some are missing and this user can
install them (root, or `sudo -n true` succeeds; and apt-get exists) it installs them; otherwise it
says which are missing and the one command that installs them, and carries on DEGRADED: the stack
starts without the layers that need them (each says NOT CONNECTED), the tests that need them skip
(under CI=true they fail). Installing never starts the packaged services (haproxy, pdns, bird,
postgresql): a policy-rc.d that exits 101 stands while apt-get runs; `make run` and the tests start
their own, on loopback. STEERING_INSTALL_SYSTEM_PACKAGES=0 makes `make run` and `make test` only
advise.
"""

from __future__ import annotations

import argparse
import glob
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "deploy" / "system-packages.txt"
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
# Who needs a package (the list's third column) -> the packages each purpose installs.
PURPOSES = {"run": ("run",), "test": ("run", "test"), "ci": ("run", "test", "ci")}

# Run by sh as root, with the package names as its arguments. Debian's invoke-rc.d asks
# /usr/sbin/policy-rc.d whether a package's service may start: 101 is "no". One that is already
# there (a container image's) is left alone.
INSTALL_SCRIPT = r"""set -e
policy=${STEERING_POLICY_RC:-/usr/sbin/policy-rc.d}  # overridable for tests only
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; trap 'rm -f "$policy"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "$@"
"""

Which = Callable[..., str | None]


@dataclass(frozen=True)
class Package:
    name: str
    probe: str       # a command, or an absolute path (may hold a * glob)
    needed_by: str   # run | test | ci


# What a person reads when a purpose's packages are missing and were not installed.
DEGRADED = {
    "run": "DEGRADED, the layers that need them are not connected",
    "test": "DEGRADED, the tests that need them skip (under CI=true they fail)",
    "ci": "CI needs every one of them",
}


def install_command(purpose: str = "run") -> str:
    """The one command that installs what `purpose` needs (the list's packages, never services)."""
    wanted = "" if purpose == "run" else f" --for {purpose}"
    return f"(cd {shlex.quote(str(ROOT))} && sudo python3 -m steering.syspkgs install{wanted})"


@dataclass
class Plan:
    missing: list[str]
    action: str                      # "nothing" | "install" | "advise"
    command: list[str] = field(default_factory=list)   # what "install" runs
    why_not: str = ""                # why it only advises
    purpose: str = "run"

    @property
    def advice(self) -> str:
        """The one command a person runs to install what is missing."""
        if not self.missing:
            return ""
        if self.why_not == "no apt-get here":
            return f"install with your package manager (Debian names): {' '.join(self.missing)}"
        return install_command(self.purpose)


def read_list(path: Path = LIST) -> list[Package]:
    packages = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 3 or words[2] not in PURPOSES:
            raise ValueError(f"{path}:{number}: expected 'package probe run|test|ci', got {line!r}")
        packages.append(Package(*words))
    return packages


def hint(*probes: str, path: Path = LIST) -> str:
    """For a layer that cannot start because these commands are missing: the packages the list
    has for them and the one command that installs them (no package name written twice)."""
    names = [p.name for p in read_list(path) if p.probe in probes]
    return f"{' '.join(names) or ' '.join(probes)}; to install: {install_command()}"


def is_installed(package: Package, which: Which = shutil.which) -> bool:
    if package.probe.startswith("/"):
        return bool(glob.glob(package.probe))
    return bool(which(package.probe) or which(package.probe, path=SBIN))


def passwordless_sudo(which: Which = shutil.which) -> bool:
    if not which("sudo"):
        return False
    try:
        return subprocess.run(["sudo", "-n", "true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def plan(packages: Sequence[Package], purpose: str = "run", *, which: Which = shutil.which,
         is_root: bool | None = None, sudo_ok: Callable[[], bool] | None = None,
         allowed: bool = True) -> Plan:
    """What to do about the packages `purpose` needs: nothing, install them, or advise."""
    wanted = PURPOSES[purpose]
    missing = [p.name for p in packages if p.needed_by in wanted and not is_installed(p, which)]
    if not missing:
        return Plan([], "nothing", purpose=purpose)
    if not (which("apt-get") or which("apt-get", path=SBIN)):
        return Plan(missing, "advise", why_not="no apt-get here", purpose=purpose)
    if not allowed:
        return Plan(missing, "advise", why_not="STEERING_INSTALL_SYSTEM_PACKAGES=0", purpose=purpose)
    root = os.geteuid() == 0 if is_root is None else is_root
    if root:
        prefix: list[str] = []
    elif (sudo_ok or (lambda: passwordless_sudo(which)))():
        prefix = ["sudo", "-n"]
    else:
        return Plan(missing, "advise", why_not="not root, and sudo asks for a password", purpose=purpose)
    return Plan(missing, "install", [*prefix, "sh", "-c", INSTALL_SCRIPT, "sh", *missing], purpose=purpose)


def install(p: Plan) -> int:
    print(f"installing system packages: {' '.join(p.missing)} (their services are not started)", flush=True)
    return subprocess.call(p.command, stdin=subprocess.DEVNULL)


def ensure(purpose: str = "run", path: Path = LIST) -> list[str]:
    """For `make run` and `make test`: install what is missing when allowed and possible. Returns
    lines for the banner (none when everything is there)."""
    packages = read_list(path)
    allowed = os.environ.get("STEERING_INSTALL_SYSTEM_PACKAGES", "1") != "0"
    first = plan(packages, purpose, allowed=allowed)
    if first.action == "install":
        if install(first) != 0:
            print("installing system packages failed; starting without them", file=sys.stderr, flush=True)
        after = plan(packages, purpose, allowed=False)
        if not after.missing:
            return [f"  system packages:  installed {', '.join(first.missing)}"]
        first = Plan(after.missing, "advise", why_not="apt-get did not install them", purpose=purpose)
    if first.action == "nothing":
        return []
    again = "make test" if purpose == "test" else "make run"
    return [f"  system packages:  MISSING {', '.join(first.missing)} ({first.why_not}): {DEGRADED[purpose]}",
            f"                    to install them: {first.advice}   then {again} again"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m steering.syspkgs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("check", "install", "ensure"))
    parser.add_argument("--for", dest="purpose", choices=tuple(PURPOSES), default="run")
    parser.add_argument("--list", type=Path, default=LIST, help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.command == "ensure":  # the Makefile's: never fails, so make carries on degraded
        for line in ensure(args.purpose, args.list):
            print(line, flush=True)
        return 0
    packages = read_list(args.list)
    p = plan(packages, args.purpose)
    if args.command == "check" or p.action == "nothing":
        for name in p.missing:
            print(name)
        if not p.missing and args.command == "install":
            print(f"system packages ({args.purpose}): all installed")
        return 1 if p.missing else 0
    if p.action == "advise":
        print(f"missing: {' '.join(p.missing)}; cannot install them ({p.why_not}).\n{p.advice}", file=sys.stderr)
        return 1
    rc = install(p)
    still = plan(packages, args.purpose, allowed=False).missing
    if rc != 0 or still:
        print(f"still missing after apt-get (exit {rc}): {' '.join(still)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
