"""Serving the remote-backend app: uvicorn on one HOST:PORT. Standard library and uvicorn only.

The GSLB server process is steering.agents.gslb (`steering-agent gslb`): it fills the app's
snapshot from the control plane's agent contract. Lookups never wait on the network: they read
the snapshot the agent's thread last swapped in.
"""

from __future__ import annotations

from typing import Any


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen wants HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def uvicorn_server(app: Any, host: str, port: int) -> Any:
    """A uvicorn.Server for the raw ASGI app: uvloop and httptools when installed, no access log,
    no lifespan. `.run()` serves until SIGINT/SIGTERM."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, loop="auto", http="auto", lifespan="off",
                            access_log=False, log_level="warning", server_header=False,
                            # PowerDNS keeps its connections; idle ones may stay a while.
                            timeout_keep_alive=30)
    return uvicorn.Server(config)
