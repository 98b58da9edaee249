"""Field validators a network engineer expects: addresses, CIDRs, hostnames, ranges."""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from django.core.exceptions import ValidationError

_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)
_STATUS_RANGE = re.compile(r"^\s*(\d{3})(?:\s*-\s*(\d{3}))?\s*$")


def validate_hostname(value: str) -> None:
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253:
        raise ValidationError("Enter a hostname of 1 to 253 characters.", code="invalid_hostname")
    labels = name.split(".")
    if not all(_HOST_LABEL.match(label) for label in labels):
        raise ValidationError(
            "Enter a valid hostname: labels of letters, digits and hyphens, each 1-63 long.",
            code="invalid_hostname",
        )
    if labels[-1].isdigit():
        raise ValidationError("A hostname's last label cannot be all digits.", code="invalid_hostname")


def validate_fqdn(value: str) -> None:
    validate_hostname(value)
    if "." not in value.rstrip("."):
        raise ValidationError("Enter a fully qualified name, such as api.example.net.", code="invalid_fqdn")


def validate_address_or_hostname(value: str) -> None:
    """An IPv4/IPv6 address or a hostname."""
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", value) or ":" in value:
        raise ValidationError(f"{value!r} is not a valid IPv4 or IPv6 address.", code="invalid_address")
    validate_hostname(value)


def validate_cidr(value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValidationError(f"{value!r} is not a network in CIDR form (e.g. 198.51.100.0/24): {exc}", code="invalid_cidr") from exc
    if "/" not in value:
        raise ValidationError("Give the prefix length, e.g. 198.51.100.0/24.", code="invalid_cidr")


def validate_status_range(value: str) -> None:
    """'200', '200-399', or several joined with commas: '200-299,301'."""
    for part in value.split(","):
        match = _STATUS_RANGE.match(part)
        if not match:
            raise ValidationError(f"{part.strip()!r} is not a status code or range like 200-399.", code="invalid_status")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if not (100 <= low <= high <= 599):
            raise ValidationError(f"{part.strip()!r}: codes go from 100 to 599, low to high.", code="invalid_status")


def parse_status_range(value: str) -> list[tuple[int, int]]:
    ranges = []
    for part in value.split(","):
        match = _STATUS_RANGE.match(part)
        if match:
            low = int(match.group(1))
            ranges.append((low, int(match.group(2) or low)))
    return ranges


def validate_path_prefix(value: str) -> None:
    if value and (not value.startswith("/") or any(c.isspace() for c in value)):
        raise ValidationError("A path prefix starts with / and has no spaces, e.g. /payments.", code="invalid_path")


_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def validate_monitor_path(value: str) -> None:
    """A health check's path (and query): what can go on an HTTP request line once percent-encoded
    (steering.health.checks.request_target encodes the rest, e.g. non-ASCII as UTF-8). Refused:
    spaces and control characters (CR/LF would split the request), a fragment (never sent), and a
    "%" that starts no escape (ambiguous: write %25)."""
    if not value.startswith("/"):
        raise ValidationError("A monitor path starts with /, e.g. /healthz.", code="invalid_path")
    bad = next((c for c in value if c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")), None)
    if bad is not None:
        raise ValidationError(f"A monitor path cannot contain spaces or control characters (found {bad!r}); "
                              "percent-encode them, e.g. %20.", code="invalid_path")
    if "#" in value:
        raise ValidationError("A monitor path cannot contain # (a fragment is never sent to the server).",
                              code="invalid_path")
    if _PERCENT_ESCAPE.search(value):
        raise ValidationError('A "%" in a monitor path must start an escape such as %2F (write %25 for "%").',
                              code="invalid_path")
