"""The agent side of the contract: follow a scope's desired state, apply it, say what happened.

    GET  /api/v1/agent/desired/?layer=&pop=&instance=&after=V&wait=N   (If-None-Match: the etag we run)
         200 {"version", "etag", "spec", ...}: a newer desired state; apply it, then ACK it
         304 X-Steering-Version: V: the spec we run is still current as of V; ACK V, apply nothing
    POST /api/v1/agent/ack/     {layer, pop, instance, version, etag}            applied
                                {layer, pop, instance, version, error}           refused (NACK)
    POST /api/v1/agent/report/  {layer, pop, instance, ...observations}

Fail static: the last applied desired state is kept on local disk (StateFile). When the control
plane is unreachable the data plane keeps running it; after the agent's own restart it is applied
again from disk before the control plane is asked; when the control plane returns, the next
long-poll brings the agent up to date (retries back off to at most MAX_BACKOFF_SECONDS).

Standard library only: this runs on PoP hosts.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steering.privatefiles import write_private

__version__ = "1"
logger = logging.getLogger("steering.agents")

MAX_BACKOFF_SECONDS = 1.0
DEFAULT_WAIT_SECONDS = 25


class ControlPlaneError(Exception):
    """The control plane could not be reached, or refused the request (status set when it answered)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApplyError(Exception):
    """The data plane refused the desired state: the message is its own error, sent as a NACK."""


@dataclass(frozen=True)
class Desired:
    layer: str
    pop: str | None
    version: int
    etag: str
    spec: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "pop": self.pop, "version": self.version, "etag": self.etag, "spec": self.spec}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Desired:
        if not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
            raise ValueError("not a desired-state document")
        return cls(str(data["layer"]), data.get("pop"), int(data["version"]), str(data["etag"]), data["spec"])


def read_token(path: str | os.PathLike[str]) -> str:
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"{path} is empty: put the agent token there (manage.py create_token --agent ...)")
    return token


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect could point anywhere; an agent talks to its API URL only


class ContractClient:
    """HTTP to the control plane for one scope (layer + PoP) and one agent instance."""

    def __init__(self, api: str, token: str, layer: str, *, pop: str | None = None, instance: str = "default",
                 timeout: float = 5.0, user_agent: str = "steering-agent") -> None:
        parsed = urllib.parse.urlsplit(api)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"--api must be an http(s) URL, not {api!r}")
        self.base = api.rstrip("/")
        self.token, self.layer, self.pop, self.instance = token, layer, pop, instance
        self.timeout = timeout
        self.user_agent = f"{user_agent}/{__version__}"
        # No proxies from the environment and no redirects: requests go to the API URL itself.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())

    def _scope(self) -> dict[str, Any]:
        scope: dict[str, Any] = {"layer": self.layer, "instance": self.instance}
        if self.pop:
            scope["pop"] = self.pop
        return scope

    def _open(self, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str],
              timeout: float) -> tuple[int, dict[str, str], bytes]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            "Content-Type": "application/json", "User-Agent": self.user_agent, **headers})
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return 304, dict(exc.headers.items()), b""
            detail = exc.read()[:500].decode(errors="replace")
            raise ControlPlaneError(f"{method} {path.split('?')[0]}: HTTP {exc.code} {detail}", exc.code) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ControlPlaneError(f"{method} {path.split('?')[0]}: {exc}") from exc

    def fetch(self, *, after: int | None = None, etag: str | None = None,
              wait: int = DEFAULT_WAIT_SECONDS) -> Desired | int | None:
        """A newer desired state; or (304 carrying our etag) the version the spec we run is
        current as of; or None when the wait ran out with nothing new."""
        query = self._scope()
        if after is not None:
            query.update(after=after, wait=wait)
        status, headers, body = self._open(
            "GET", "/api/v1/agent/desired/?" + urllib.parse.urlencode(query), None,
            {"If-None-Match": etag} if etag else {}, timeout=self.timeout + (wait if after is not None else 0))
        if status == 304:
            lowered = {k.lower(): v for k, v in headers.items()}
            if not etag or lowered.get("etag") != etag:
                return None  # the wait ran out: nothing new (not "your spec is current")
            try:
                return int(lowered["x-steering-version"])
            except (KeyError, ValueError) as exc:
                raise ControlPlaneError("304 without a usable X-Steering-Version") from exc
        try:
            return Desired.from_dict(json.loads(body))
        except (ValueError, KeyError, TypeError) as exc:
            raise ControlPlaneError(f"unexpected desired-state answer: {body[:200]!r}") from exc

    def post(self, path: str, body: dict[str, Any]) -> Any:
        status, _headers, raw = self._open("POST", path, {**self._scope(), **body}, {}, timeout=self.timeout)
        return json.loads(raw or b"null")

    def ack(self, version: int, etag: str) -> Any:
        return self.post("/api/v1/agent/ack/", {"version": version, "etag": etag})

    def nack(self, version: int, error: str) -> Any:
        return self.post("/api/v1/agent/ack/", {"version": version, "error": error[:4000] or "refused"})

    def report(self, **observations: Any) -> Any:
        return self.post("/api/v1/agent/report/", observations)


class StateFile:
    """The last applied desired state on local disk: written atomically (temp file + rename),
    private to the agent's user (0600) from the moment it exists."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> Desired | None:
        try:
            return Desired.from_dict(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError) as exc:
            logger.warning("ignoring unreadable state file %s: %s", self.path, exc)
            return None

    def save(self, desired: Desired) -> None:
        write_private(self.path, json.dumps(desired.as_dict(), separators=(",", ":")), sync=True)


class Follower:
    """Keeps a data plane on its scope's desired state: long-poll, apply, ACK/NACK, persist.

    `apply(desired)` brings the data plane to `desired` (raising ApplyError with the data plane's
    own words to refuse it). It runs on the caller's thread in `step()`; `run()` loops `step()`.
    """

    def __init__(self, client: ContractClient, store: StateFile, apply: Callable[[Desired], None], *,
                 wait: int = DEFAULT_WAIT_SECONDS, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client, self.store, self.apply_fn = client, store, apply
        self.wait = wait
        self.sleep = sleep
        self.current: Desired | None = None       # what the data plane runs (applied, or restored)
        self.seen_version: int | None = None      # the newest version the control plane vouched for
        self.acked = -1
        self.confirmed = -1                       # the newest version known to want exactly `current`
        self.refused: tuple[int, str, str] | None = None   # (version, error, etag) of the last refusal
        self.connected = False
        self.last_error = ""
        self._backoff = 0.1
        self._lock = threading.Lock()

    def restore(self) -> Desired | None:
        """After a restart: run the state kept on disk again, before asking anyone (fail static)."""
        kept = self.store.load()
        if kept is None:
            return None
        try:
            self.apply_fn(kept)
        except ApplyError as exc:
            logger.warning("could not re-apply the kept state (version %s): %s", kept.version, exc)
            return None
        self.current = kept
        logger.info("restored version %s from %s", kept.version, self.store.path)
        return kept

    def step(self) -> None:
        """One long-poll and what follows. Never raises for a control-plane problem."""
        after = self.seen_version if self.seen_version is not None else None
        # After a refusal, ask with the refused spec's etag: the control plane then waits for a
        # different desired state instead of offering the refused one again at once.
        refused_etag = self.refused[2] if self.refused is not None else None
        etag = refused_etag or (self.current.etag if self.current is not None else None)
        try:
            answer = self.client.fetch(after=after, etag=etag, wait=self.wait)
        except ControlPlaneError as exc:
            self._unreachable(exc)
            return
        self.connected, self._backoff = True, 0.1
        if answer is None:  # nothing new; an acknowledgement that failed earlier is sent again
            if self.current is not None and self.confirmed > self.acked:
                self._acknowledge(self.confirmed, self.current.etag)
            return
        if isinstance(answer, int):
            if refused_etag is not None:
                # The refused spec is still the desired one. A newer version of it gets one more
                # try (the refusal may have been passing): forget the refusal and keep asking
                # from the refused version, so the next answer brings the spec to apply again.
                if self.refused is not None and answer > self.refused[0]:
                    self.refused = None
                else:
                    self.seen_version = max(answer, self.seen_version or 0)
                return
            self.seen_version = max(answer, self.seen_version or 0)
            # The control plane vouches that the spec we run is the desired state as of `answer`.
            if self.current is not None:
                self.confirmed = max(self.confirmed, answer)
                self._acknowledge(self.confirmed, self.current.etag)
            return
        if self.current is not None and answer.etag == self.current.etag:
            self.seen_version = answer.version
            self.confirmed = max(self.confirmed, answer.version)
            self._acknowledge(answer.version, answer.etag)
            return
        try:
            self.apply_fn(answer)
        except ApplyError as exc:
            self.seen_version = answer.version  # refused: wait for a newer version, keep the old state
            self._refuse(answer.version, str(exc), answer.etag)
            return
        except Exception as exc:
            # The data plane could not be reached or failed oddly: not applied, not refused.
            # seen_version stays put, so the next step fetches this version again.
            logger.warning("could not apply version %s yet: %s", answer.version, exc)
            self.last_error = f"applying version {answer.version}: {exc}"
            self.sleep(MAX_BACKOFF_SECONDS)
            return
        self.seen_version = answer.version
        self.confirmed = answer.version
        with self._lock:
            self.current = answer
        try:
            self.store.save(answer)
        except OSError as exc:  # the data plane has it; only a restart would miss it
            logger.error("could not keep version %s on disk: %s", answer.version, exc)
        self._acknowledge(answer.version, answer.etag)

    def _acknowledge(self, version: int, etag: str) -> None:
        if version <= self.acked:
            return
        try:
            self.client.ack(version, etag)
            self.acked = version
            self.refused = None
        except ControlPlaneError as exc:
            self._unreachable(exc)

    def _refuse(self, version: int, error: str, etag: str) -> None:
        logger.error("refused version %s: %s", version, error)
        if self.refused is not None and self.refused[:2] == (version, error):
            self.sleep(MAX_BACKOFF_SECONDS)
            return
        try:
            self.client.nack(version, error)
            self.refused = (version, error, etag)
        except ControlPlaneError as exc:
            self._unreachable(exc)
        # Keep running the last good state; ask again (a fix upstream moves the version).

    def _unreachable(self, exc: ControlPlaneError) -> None:
        if self.connected or self.last_error != str(exc):
            logger.warning("control plane: %s (keeping version %s)", exc,
                           self.current.version if self.current else "none")
        self.connected, self.last_error = False, str(exc)
        if exc.status in (401, 403):
            self.sleep(5.0)  # a revoked or wrong token: say so, slowly
            return
        self.sleep(self._backoff)
        self._backoff = min(MAX_BACKOFF_SECONDS, self._backoff * 2)

    def run(self, should_stop: Callable[[], bool]) -> None:
        while not should_stop():
            try:
                self.step()
            except Exception:  # an agent bug must not stop the data plane's updates for good
                logger.exception("agent step failed")
                self.sleep(1.0)
