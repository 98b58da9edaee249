"""The HTTP side of steerctl: JSON over urllib, API errors as typed exceptions, safe retries.

Each exception carries the exit code a pipeline sees, so the mapping from API answers to exit
codes is made once, here. Retries happen only where they cannot change anything twice: reads,
and actions that carry an Idempotency-Key (the server answers a repeated key with the first
answer). The token goes into the Authorization header and nowhere else.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from steering.cli import EXIT_CONFLICT, EXIT_ERROR, EXIT_GUARD, EXIT_STALE, __version__

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({502, 503, 504})
FINAL_STATUSES = frozenset({"succeeded", "aborted", "failed", "unconfirmed"})
WAIT_STEP_SECONDS = 60  # the API's ?wait= maximum


class CliError(Exception):
    """Anything steerctl reports and exits on; `exit_code` is what the pipeline sees."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NetworkError(CliError):
    """The request may not have arrived, or its answer was lost: worth a retry when that is safe."""


class ApiError(CliError):
    """An answer from the API that is not a success, in its {"code", "detail", ...} shape."""

    def __init__(self, status: int, body: Any, message: str | None = None) -> None:
        self.status = status
        self.body: dict[str, Any] = body if isinstance(body, dict) else {"detail": str(body or "")}
        self.code = str(self.body.get("code") or f"http_{status}")
        self.detail = str(self.body.get("detail") or "")
        super().__init__(message or self.detail or f"HTTP {status}")


class NotFound(ApiError):
    pass


class AuthFailed(ApiError):
    pass


class InvalidInput(ApiError):
    pass


class GuardRefused(ApiError):
    exit_code = EXIT_GUARD

    @property
    def impact(self) -> dict[str, Any]:
        impact = self.body.get("impact")
        return impact if isinstance(impact, dict) else {}


class StateConflict(ApiError):
    exit_code = EXIT_CONFLICT


class Stale(ApiError):
    exit_code = EXIT_STALE


class ServerError(ApiError):
    pass


def api_error(status: int, body: Any) -> ApiError:
    """The typed exception for an error answer: the one mapping from status/code to exit code."""
    if status == 409:
        code = body.get("code") if isinstance(body, dict) else None
        guarded = code in ("capacity_guard", "safety_rule")
        return GuardRefused(status, body) if guarded else StateConflict(status, body)
    kinds: dict[int, type[ApiError]] = {400: InvalidInput, 401: AuthFailed, 403: AuthFailed, 404: NotFound,
                                        412: Stale, 422: InvalidInput}
    kind = kinds.get(status, ServerError if status >= 500 else ApiError)
    return kind(status, body)


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would resend the bearer token to wherever it points; refuse it instead."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise CliError(f"the API answered {code} redirecting to {newurl}: check STEERING_URL / --url")


def _is_loopback(host: str | None) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


def new_idempotency_key() -> str:
    """One key per action invocation, reused by every retry of it."""
    return f"steerctl-{uuid.uuid4()}"


class Client:
    """A bearer-token JSON client for /api/v1/; one per steerctl invocation."""

    def __init__(self, base_url: str, token: str, *, tries: int = 3, backoff: float = 0.5, timeout: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CliError(f"not an http(s) URL: {base_url!r} (STEERING_URL / --url)")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.tries = max(1, tries)
        self.backoff = backoff
        self.timeout = timeout
        self._sleep = sleep
        self.request_id = f"steerctl-{uuid.uuid4().hex[:16]}"
        handlers: list[Any] = [_NoRedirect()]
        if _is_loopback(parsed.hostname):
            handlers.append(urllib.request.ProxyHandler({}))  # no proxy can reach our loopback
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:  # never show the token, even in a traceback
        return f"Client({self.base_url!r})"

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None}, doseq=True)
        return f"{self.base_url}{path}" + (f"?{query}" if query else "")

    def get(self, path: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """GET is safe to repeat, so it is always retried on a lost connection or a 502/503/504."""
        return self.request("GET", path, params=params, timeout=timeout, retry=True).body

    def get_text(self, path: str, accept: str) -> str:
        """A GET whose answer is text in another format (the fleet file as YAML); errors are still JSON."""
        return str(self.request("GET", path, headers={"Accept": accept}, retry=True, as_text=True).body)

    def post(self, path: str, body: dict[str, Any], *, idempotency_key: str | None = None,
             headers: dict[str, str] | None = None) -> Response:
        """POST retries only with an Idempotency-Key: the server then answers a retry with the first answer."""
        all_headers = {**({"Idempotency-Key": idempotency_key} if idempotency_key else {}), **(headers or {})}
        return self.request("POST", path, body=body, headers=all_headers, retry=idempotency_key is not None)

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
                headers: dict[str, str] | None = None, timeout: float | None = None, retry: bool = False,
                as_text: bool = False) -> Response:
        url = self.url(path, params)
        data = None if body is None else json.dumps(body).encode()
        all_headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "User-Agent": f"steerctl/{__version__}",
            "X-Steering-Client": "steerctl",
            "X-Request-ID": self.request_id,
            **({"Content-Type": "application/json"} if data is not None else {}),
            **(headers or {}),
        }
        tries = self.tries if retry else 1
        for attempt in range(1, tries + 1):
            try:
                return self._once(method, url, data, all_headers, timeout or self.timeout, as_text)
            except (NetworkError, ServerError) as exc:
                retryable = isinstance(exc, NetworkError) or exc.status in RETRY_STATUSES
                if not retryable or attempt == tries:
                    raise
                self._sleep(self.backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, method: str, url: str, data: bytes | None, headers: dict[str, str], timeout: float,
              as_text: bool = False) -> Response:
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                content = resp.read()
                body = content.decode("utf-8", "replace") if as_text else _decode(content, url, resp.status)
                return Response(resp.status, body, dict(resp.headers.items()))
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                parsed: Any = json.loads(raw) if raw else {}
            except ValueError:
                parsed = {"detail": raw.decode("utf-8", "replace").strip()[:300]}
            raise api_error(exc.code, parsed) from None
        except urllib.error.URLError as exc:
            raise NetworkError(f"cannot reach {self.base_url}: {exc.reason}") from None
        except (http.client.HTTPException, OSError) as exc:
            raise NetworkError(f"cannot reach {self.base_url}: {exc.__class__.__name__} {exc}".rstrip()) from None

    def count(self, path: str, params: dict[str, Any]) -> int:
        """How many rows a filtered list has, without fetching them."""
        return int(self.get(path, {**params, "page_size": 1})["count"])

    def first_page(self, path: str, params: dict[str, Any], size: int = 100) -> list[dict[str, Any]]:
        body = self.get(path, {**params, "page_size": size})
        return list(body.get("results", [])) if isinstance(body, dict) else list(body)

    def wait_operation(self, op_id: int, timeout: float,
                       on_progress: Callable[[dict[str, Any]], None] | None = None) -> tuple[dict[str, Any], bool]:
        """Follow an operation with ?wait=N (N <= 60) until it ends or `timeout` passes.

        Returns (operation, ended). The server holds each request open until the end or N s, so
        this costs one request a minute, not a poll loop.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            step = max(0.0, min(WAIT_STEP_SECONDS, deadline - time.monotonic()))
            op = self.get(f"/api/v1/operations/{int(op_id)}/", {"wait": f"{step:.1f}"}, timeout=step + 30)
            if op.get("status") in FINAL_STATUSES:
                return op, True
            if time.monotonic() >= deadline:
                return op, False
            if on_progress is not None:
                on_progress(op)


def _decode(raw: bytes, url: str, status: int) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise CliError(f"expected JSON from {url} (HTTP {status}); is STEERING_URL the steering API?") from None
