"""Bring the whole product up: ASGI server (HTTP + WebSocket), Celery worker and beat, and the
data planes that are installed here.

Used by `make run`. Starts a private Redis on loopback when REDIS_URL is not set, prints the
URL and how to sign in, and stops everything on Ctrl-C (or when any part dies). With HAProxy
installed, the HAProxy agent runs one HAProxy per demo PoP (frontends on 127.2.<pop>.<service>)
and a small traffic generator sends requests through them; without it, the output says the
local layer is not connected.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from config.embedded import PrivateRedis
from steering import redisconn, syspkgs
from steering.dataplane.exabgp.demo import anycast_layer
from steering.dataplane.haproxy.demo import local_layer
from steering.gslb.demo import dns_layer
from steering.lifecycle import StopRequest


class Command(BaseCommand):
    help = "Run the web server, a Celery worker and Celery beat together (Ctrl-C stops all)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-demo-backends", dest="demo_backends", action="store_false",
                            help="Do not serve the demo backends on loopback.")
        parser.add_argument("--no-haproxy", dest="haproxy", action="store_false",
                            help="Do not start HAProxy for the demo PoPs even when it is installed.")
        parser.add_argument("--no-traffic", dest="traffic", action="store_false",
                            help="Do not run the demo traffic generator.")
        parser.add_argument("--setup", action="store_true",
                            help="First migrate, collect static files, ensure the admin user and load the demo.")

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = options["host"], options["port"]
        # System packages (deploy/system-packages.txt): installed when missing and this user can;
        # otherwise the banner says which are missing and how to install them (steering.syspkgs).
        package_notes = syspkgs.ensure("run") if options["setup"] else []
        env = dict(os.environ)
        redis: PrivateRedis | None = None
        if not env.get("REDIS_URL"):
            redis = PrivateRedis().start()
            env["REDIS_URL"] = redis.url
        python = sys.executable
        var = settings.VAR_DIR
        # Set up first: the data-plane agents below need the demo's PoPs and their agent tokens.
        if options["setup"]:
            manage = [python, str(settings.BASE_DIR / "manage.py")]
            for step in (["migrate", "--noinput", "-v0"], ["collectstatic", "--noinput", "-v0"],
                         ["ensure_admin"], ["seed_demo"]):
                if subprocess.call(manage + step, env=env) != 0:
                    if redis:
                        redis.stop()
                    raise SystemExit(f"setup step {' '.join(step)} failed")
        commands = {
            "web": [python, "-m", "uvicorn", "config.asgi:application", "--host", host, "--port", str(port),
                    "--no-access-log", "--lifespan", "off",
                    # WebSocket frames over 64 KiB are refused (1009) before they are buffered;
                    # steering.live.consumers enforces the same cap under any server.
                    "--ws-max-size", "65536"],
            "worker": [python, "-m", "celery", "-A", "config", "worker", "--loglevel", "WARNING", "--concurrency", "2",
                       "--queues", "celery,probes", "--without-mingle", "--without-gossip",
                       "--hostname", "worker@%h"],
            # The scheduler (settings: CELERY_BEAT_SCHEDULER, steering.beat) keeps the schedule and
            # its lock in Redis: no schedule file, and a second beat started anywhere stands by.
            "beat": [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "WARNING"],
        }
        if options["demo_backends"]:
            # Real listeners for the demo fleet, so health checks have something true to find.
            commands["demo-backends"] = [python, str(settings.BASE_DIR / "manage.py"), "demo_backends"]
        notes: list[str] = list(package_notes)
        if options["haproxy"] and (shutil.which("haproxy") or os.access("/usr/sbin/haproxy", os.X_OK)):
            local = local_layer(python, var, api=f"http://{host}:{port}")
            commands.update(local.commands)
            notes += local.lines
            if options["traffic"] and options["demo_backends"]:
                commands["demo-traffic"] = [python, str(settings.BASE_DIR / "manage.py"), "demo_traffic"]
                notes.append("  demo traffic:     a few requests/s through every PoP (manage.py demo_traffic)")
        else:
            notes.append(f"  local layer:      NOT CONNECTED (HAProxy is not installed: {syspkgs.hint('haproxy')})")
        # DNS layer: the GSLB server and a loopback PowerDNS, when pdns_server is installed.
        # The GSLB server follows this web server with a DNS agent token (manage.py gslb_server keeps
        # one in var/gslb/agent.token, then execs `python -m steering.agents gslb`).
        dns = dns_layer(python, settings.BASE_DIR / "manage.py", var, listen=settings.STEERING_GSLB_LISTEN,
                        dns_port=settings.STEERING_DNS_PORT, api=f"http://{host}:{port}")
        commands.update(dns.commands)
        notes += dns.lines
        # Anycast layer: BIRD as the router and one ExaBGP + agent per PoP, when both are installed.
        anycast = anycast_layer(python, var, api=f"http://{host}:{port}")
        commands.update(anycast.commands)
        notes += anycast.lines
        procs: dict[str, subprocess.Popen[bytes]] = {}
        stop = StopRequest()
        try:
            for name, cmd in commands.items():
                procs[name] = subprocess.Popen(cmd, env=env, start_new_session=True)
            self._announce(host, port, redisconn.printable(env["REDIS_URL"]), redis is not None, notes)
            while not stop():
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        self.stderr.write(f"{name} exited with {proc.returncode}; stopping everything")
                        stop.set()
                        break
                time.sleep(0.5)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            for proc in procs.values():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            if redis:
                redis.stop()
            self.stdout.write("stopped")

    def _announce(self, host: str, port: int, redis_url: str, private_redis: bool, notes: list[str]) -> None:
        db = settings.DATABASES["default"]
        password_file = settings.VAR_DIR / "admin-password.txt"
        lines = [
            "",
            f"  steering is up:   http://{host}:{port}/",
            f"  API:              http://{host}:{port}/api/v1/   docs: http://{host}:{port}/api/docs/",
            f"  database:         {db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}",
            f"  redis:            {redis_url}{' (private, embedded)' if private_redis else ''}",
        ]
        if password_file.exists():
            lines.append(f"  sign in:          admin / {password_file.read_text().strip()}")
        else:
            lines.append("  sign in:          admin / the password in STEERING_ADMIN_PASSWORD")
        lines += notes
        lines += ["  API token:        python manage.py create_token admin --role operator --name my-tool",
                  "  stop:             Ctrl-C", ""]
        self.stdout.write("\n".join(lines))
