"""deploy/system-packages.txt and steering.syspkgs: what `make run` and .ci/run do about missing
Debian packages. `which` and the sudo check are faked; nothing is installed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from steering import syspkgs
from steering.syspkgs import Package, plan

PACKAGES = [Package("haproxy", "haproxy", "run"), Package("bird2", "bird", "run"),
            Package("chromium", "chromium", "test"), Package("prometheus", "promtool", "ci")]


def which_finding(*found: str):  # type: ignore[no-untyped-def]
    def which(name: str, path: str | None = None) -> str | None:
        return f"/usr/bin/{name}" if name in found else None
    return which


def never_sudo() -> bool:
    raise AssertionError("the sudo check is not needed here")


def test_nothing_missing_means_nothing_to_do() -> None:
    p = plan(PACKAGES, "ci", which=which_finding("haproxy", "bird", "chromium", "promtool"), sudo_ok=never_sudo)
    assert (p.action, p.missing, p.command, p.advice) == ("nothing", [], [], "")


def test_make_run_asks_only_for_the_packages_it_runs() -> None:
    p = plan(PACKAGES, "run", which=which_finding("haproxy", "bird"), sudo_ok=never_sudo)
    assert p.action == "nothing"
    assert plan(PACKAGES, "test", which=which_finding("haproxy", "bird", "apt-get"), is_root=True).missing == ["chromium"]


def test_root_with_apt_get_installs_the_missing_ones_without_sudo() -> None:
    p = plan(PACKAGES, "run", which=which_finding("haproxy", "apt-get"), is_root=True, sudo_ok=never_sudo)
    assert p.action == "install" and p.missing == ["bird2"]
    assert p.command[:2] == ["sh", "-c"] and p.command[-2:] == ["sh", "bird2"]
    assert "policy-rc.d" in p.command[2] and "exit 101" in p.command[2]


def test_passwordless_sudo_installs_through_sudo() -> None:
    p = plan(PACKAGES, "run", which=which_finding("apt-get", "sudo"), is_root=False, sudo_ok=lambda: True)
    assert p.action == "install" and p.missing == ["haproxy", "bird2"]
    assert p.command[:4] == ["sudo", "-n", "sh", "-c"] and p.command[-2:] == ["haproxy", "bird2"]


def test_without_root_or_passwordless_sudo_it_advises_the_one_command() -> None:
    p = plan(PACKAGES, "run", which=which_finding("apt-get", "sudo", "haproxy"), is_root=False, sudo_ok=lambda: False)
    assert (p.action, p.missing, p.command) == ("advise", ["bird2"], [])
    assert "sudo" in p.why_not and p.advice.endswith("sudo python3 -m steering.syspkgs install)")


def test_without_apt_get_it_names_the_packages() -> None:
    p = plan(PACKAGES, "run", which=which_finding(), is_root=True, sudo_ok=never_sudo)
    assert p.action == "advise" and p.why_not == "no apt-get here"
    assert p.advice.endswith("haproxy bird2")


def test_an_opt_out_only_advises() -> None:
    p = plan(PACKAGES, "run", which=which_finding("apt-get"), is_root=True, sudo_ok=never_sudo, allowed=False)
    assert p.action == "advise" and "STEERING_INSTALL_SYSTEM_PACKAGES" in p.why_not


def test_the_sudo_check_is_not_run_when_there_is_no_sudo() -> None:
    assert syspkgs.passwordless_sudo(which_finding()) is False


def test_a_path_probe_looks_for_the_file(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    probe = Package("pdns-backend-remote", f"{tmp_path}/*/libremotebackend.so", "run")
    assert not syspkgs.is_installed(probe, which_finding())
    (tmp_path / "lib" / "libremotebackend.so").write_text("")
    assert syspkgs.is_installed(probe, which_finding())


def test_make_run_starts_degraded_and_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = tmp_path / "packages.txt"
    listing.write_text("# comment\nno-such-package   steering-no-such-command   run\n")
    monkeypatch.setenv("STEERING_INSTALL_SYSTEM_PACKAGES", "0")
    lines = syspkgs.ensure("run", listing)
    assert "MISSING no-such-package" in lines[0] and "DEGRADED" in lines[0]
    assert "steering.syspkgs install" in lines[1] or "package manager" in lines[1]


def test_the_list_is_what_ci_installed_and_parses() -> None:
    names = {p.name: p.needed_by for p in syspkgs.read_list()}
    # make run builds the dashboard (npm) and runs the data planes.
    for name in ("nodejs", "npm", "haproxy", "pdns-server", "pdns-backend-remote", "pdns-backend-lua2", "dnsutils",
                 "bird2"):
        assert names[name] == "run"
    # make test adds Chromium (tests/browser) and PostgreSQL's initdb and pg_ctl (tests/chaos).
    assert names["chromium"] == "test" and names["postgresql"] == "test" and names["prometheus"] == "ci"


def test_each_purpose_includes_the_one_before_it() -> None:
    """make test needs everything make run installed; .ci/run (`--for ci`) everything make test needs."""
    assert set(syspkgs.PURPOSES["run"]) <= set(syspkgs.PURPOSES["test"]) <= set(syspkgs.PURPOSES["ci"])
    listed = syspkgs.read_list()
    for smaller, larger in (("run", "test"), ("test", "ci")):
        every = plan(listed, larger, which=which_finding("apt-get"), is_root=True).missing
        assert set(plan(listed, smaller, which=which_finding("apt-get"), is_root=True).missing) <= set(every)


def test_postgresql_is_found_by_its_initdb(tmp_path: Path) -> None:
    """The probe the list gives PostgreSQL is Debian's initdb (tests/postgres.py looks there)."""
    probe = {p.name: p for p in syspkgs.read_list()}["postgresql"]
    assert probe.probe == "/usr/lib/postgresql/*/bin/initdb"
    moved = Package("postgresql", f"{tmp_path}/*/bin/initdb", "test")
    assert not syspkgs.is_installed(moved, which_finding())
    (tmp_path / "15" / "bin").mkdir(parents=True)
    (tmp_path / "15" / "bin" / "initdb").write_text("")
    assert syspkgs.is_installed(moved, which_finding())


def test_make_test_ensures_the_test_packages_and_says_what_degrades(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    listing = tmp_path / "packages.txt"
    listing.write_text("no-such-run steering-no-such-a run\nno-such-test steering-no-such-b test\n"
                       "no-such-ci steering-no-such-c ci\n")
    monkeypatch.setenv("STEERING_INSTALL_SYSTEM_PACKAGES", "0")
    lines = syspkgs.ensure("test", listing)
    assert "MISSING no-such-run, no-such-test (" in lines[0] and "tests that need them skip" in lines[0]
    assert "no-such-ci" not in lines[0]
    assert "install --for test)" in lines[1] and lines[1].endswith("then make test again")


def test_the_makefile_ensures_packages_before_it_builds_or_tests() -> None:
    """`make run` ensures the `run` packages before the dashboard's build (npm), `make test` the `test` ones."""
    makefile = (syspkgs.ROOT / "Makefile").read_text()
    run = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    test = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert run.index("steering.syspkgs ensure --for run") < run.index("frontend") < run.index("runstack --setup")
    assert test.index("steering.syspkgs ensure --for test") < test.index("pytest")


def test_the_ensure_command_never_fails_make(tmp_path: Path) -> None:
    listing = tmp_path / "packages.txt"
    listing.write_text("no-such-package steering-no-such-command test\n")
    done = subprocess.run([sys.executable, "-m", "steering.syspkgs", "ensure", "--for", "test", "--list", str(listing)],
                          cwd=syspkgs.ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "STEERING_INSTALL_SYSTEM_PACKAGES": "0"})
    assert done.returncode == 0 and "MISSING no-such-package" in done.stdout


def test_the_layers_hints_name_packages_from_the_list() -> None:
    """runstack and the DNS and anycast demos name no package themselves: syspkgs.hint reads the list."""
    assert syspkgs.hint("haproxy").startswith("haproxy; to install: (cd ")
    assert syspkgs.hint("pdns_server").startswith("pdns-server; ")
    assert syspkgs.hint("bird").startswith("bird2; ") and "steering.syspkgs install)" in syspkgs.hint("bird")
    for source in ("steering/management/commands/runstack.py", "steering/gslb/demo.py",
                   "steering/dataplane/exabgp/demo.py"):
        assert "apt-get" not in (syspkgs.ROOT / source).read_text(), source


def test_a_bad_line_is_refused(tmp_path: Path) -> None:
    listing = tmp_path / "packages.txt"
    listing.write_text("haproxy haproxy sometimes\n")
    with pytest.raises(ValueError, match="packages.txt:1"):
        syspkgs.read_list(listing)


def test_the_install_script_holds_services_back_while_apt_get_runs(tmp_path: Path) -> None:
    """The script itself, with a stand-in apt-get that records its arguments and whether the
    policy-rc.d (here a path in tmp_path) said 101 while it ran; the policy is gone after."""
    bin_dir, policy, record = tmp_path / "bin", tmp_path / "policy-rc.d", tmp_path / "calls"
    bin_dir.mkdir()
    apt_get = bin_dir / "apt-get"
    apt_get.write_text(f'#!/bin/sh\n"{policy}"; echo "$? $*" >> "{record}"\n')
    apt_get.chmod(apt_get.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STEERING_POLICY_RC": str(policy)}
    p = plan(PACKAGES, "run", which=which_finding("apt-get"), is_root=True)
    subprocess.run(p.command, env=env, check=True, timeout=60)
    assert record.read_text().splitlines() == ["101 update -qq", "101 install -y -qq haproxy bird2"]
    assert not policy.exists()
