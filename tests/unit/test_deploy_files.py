"""docker-compose.yml describes the production shape; no Docker engine runs here, so check its structure."""

from __future__ import annotations

import yaml

from tests.support import ROOT


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


POP_SIDE = ("haproxy-agent", "gslb", "pdns", "exabgp")


def test_the_pop_side_runs_every_data_plane_with_a_healthcheck() -> None:
    services = compose()["services"]
    for name in POP_SIDE:
        assert name in services, name
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
        assert services[name].get("profiles") == ["pop"], name


def test_the_pop_side_holds_agent_tokens_and_no_database_or_redis_credential() -> None:
    services = compose()["services"]
    secrets = compose()["secrets"]
    for name in POP_SIDE:
        env = services[name].get("environment", {}) or {}
        assert not {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"} & set(env), f"{name} holds control-plane credentials"
        assert "<<" not in env, name
        for secret in services[name].get("secrets", []):
            assert secrets[secret]["file"].startswith("./secrets/agent-"), (name, secret)
    commands = {name: services[name]["command"] for name in ("haproxy-agent", "gslb")}
    for name, command in commands.items():
        assert command[0] == "steering-agent" and "--token-file" in command, name
        assert command[command.index("--api") + 1] == "http://web:8000", name


def test_the_agents_it_starts_exist() -> None:
    from steering.agents.cli import SUBCOMMANDS

    services = compose()["services"]
    for name in ("haproxy-agent", "gslb"):
        assert services[name]["command"][1] in SUBCOMMANDS
    exabgp_conf = (ROOT / "deploy" / "compose" / "exabgp.conf").read_text()
    assert services["exabgp"]["command"] == ["exabgp", "/opt/steering/deploy/compose/exabgp.conf"]
    assert "-m steering.agents.exabgp" in exabgp_conf
    assert "--token-file /run/secrets/agent_pop_token" in exabgp_conf and "--api http://web:8000" in exabgp_conf
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "AS agent" in dockerfile


def test_redis_asks_for_a_password_and_the_app_gives_it() -> None:
    services = compose()["services"]
    redis = services["redis"]
    assert "requirepass" in " ".join(redis["command"]) and "REDIS_PASSWORD" in redis["environment"]
    assert "REDIS_PASSWORD" not in " ".join(redis["command"]).replace("$$REDIS_PASSWORD", "")  # never on argv
    for name in ("web", "worker", "beat", "migrate"):
        assert services[name]["environment"]["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD"), name
