"""What the anycast tests start beside BIRD and ExaBGP (steering.dataplane.exabgp.lab): the
control plane's web process, which serves the agent's long-poll, and the check that the binaries
are there. tests/integration uses them too, beside the other data planes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from steering.dataplane.exabgp.lab import bird_binary, birdc_binary, exabgp_binary
from tests.processes import WebProcess
from tests.support import missing

DEADLINE = 60.0


def require_binaries() -> None:
    absent = [name for name, found in (("bird", bird_binary()), ("birdc", birdc_binary()),
                                       ("exabgp", exabgp_binary())) if not found]
    if absent:
        message = f"{', '.join(absent)} not installed (Debian bird2; exabgp from requirements-dev.txt)"
        missing(message)


class Web(WebProcess):
    """The control plane's web process (tests.processes.WebProcess) with its var dir under
    `workdir`, and call() for the API. Long-polls in flight are not waited out when it stops
    (uvicorn's graceful shutdown is 1 s); stop() and start() keep the port."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, uvicorn_args=("--timeout-graceful-shutdown", "1"),
                         STEERING_VAR_DIR=str(workdir / "var"), STEERING_DATAPLANE_CONFIRM="0")
        self.workdir = workdir
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def start(self, timeout: float = DEADLINE) -> Web:
        self.workdir.mkdir(parents=True, exist_ok=True)
        super().start(timeout)
        return self

    def call(self, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                     "Accept": "application/json"})
        try:
            with self._opener.open(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw.startswith(b"{") else raw.decode(errors="replace")
