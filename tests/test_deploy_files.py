"""docker-compose.yml describes the production shape; no Docker engine runs here, so check its structure."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_it_has_the_production_services_with_healthchecks() -> None:
    services = compose()["services"]
    for name in ("postgres", "redis", "web", "worker", "beat"):
        assert name in services, name
        assert "healthcheck" in services[name], f"{name} has no healthcheck"


def test_the_app_services_share_the_same_environment_contract() -> None:
    services = compose()["services"]
    for name in ("web", "worker", "beat"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["REDIS_URL"].startswith("redis://")
        assert "SECRET_KEY" in env


def test_the_commands_it_runs_exist() -> None:
    services = compose()["services"]
    commands = " ".join(" ".join(s.get("command", [])) + " " + " ".join(s.get("healthcheck", {}).get("test", []))
                        for s in services.values())
    for management_command in ("check_sweeper", "ensure_admin"):
        if management_command in commands:
            assert (ROOT / "steering" / "management" / "commands" / f"{management_command}.py").exists()
    assert "config" in commands  # celery -A config


def test_every_queue_a_task_is_routed_to_has_a_worker() -> None:
    from django.conf import settings

    queues = {"celery"} | {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    consumed: set[str] = set()
    for service in compose()["services"].values():
        command = service.get("command", [])
        if "worker" in command and "--queues" in command:
            consumed |= set(command[command.index("--queues") + 1].split(","))
    assert queues <= consumed, f"nobody consumes {queues - consumed}"
    assert "probes" in queues  # probe shards do not share the timers' queue
