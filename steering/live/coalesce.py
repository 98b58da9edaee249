"""Merging buffered deltas into one message (pure: no Django, no I/O).

A flapping fleet can commit hundreds of versions a second; each browser gets at most one message
per window. A message covers a contiguous run of versions: `from_version` is the first, `version`
the last, and `changes` keeps one entry per (type, id), the latest, in order of first appearance.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _runs(deltas: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split deltas sorted by version into runs of consecutive versions."""
    runs: list[list[dict[str, Any]]] = []
    for delta in deltas:
        if runs and delta["version"] == runs[-1][-1]["version"] + 1:
            runs[-1].append(delta)
        else:
            runs.append([delta])
    return runs


def has_hole(deltas: Iterable[dict[str, Any]], *, after: int | None = None) -> bool:
    """True when the buffered versions (those above `after`) do not follow on from `after` without a gap."""
    versions = sorted({int(d["version"]) for d in deltas if after is None or int(d["version"]) > after})
    if not versions:
        return False
    expected = versions[0] if after is None else after + 1
    return versions != list(range(expected, expected + len(versions)))


def coalesce(deltas: Iterable[dict[str, Any]], *, after: int | None = None) -> dict[str, Any] | None:
    """One delta message for the buffered `deltas`, or None if there is nothing new.

    Deltas may arrive out of order (several processes publish after their own commits), so they
    are sorted by version; duplicates and versions at or below `after` (already sent) are dropped.
    When the buffer has a hole, only the last run is sent: its `from_version` lies beyond the
    browser's version + 1, so the browser refetches the topology, which covers the earlier runs too.
    """
    by_version: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        version = int(delta["version"])
        if after is None or version > after:
            by_version.setdefault(version, delta)
    if not by_version:
        return None
    run = _runs([by_version[v] for v in sorted(by_version)])[-1]
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for delta in run:
        for change in delta.get("changes", ()):
            # Re-assigning an existing key keeps its first position: order of first appearance.
            merged[(change["type"], change["id"])] = change
    return {"type": "delta", "from_version": run[0]["version"], "version": run[-1]["version"],
            "changes": list(merged.values())}
