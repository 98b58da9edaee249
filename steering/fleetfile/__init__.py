"""The fleet file: the desired configuration of the whole fleet as one document (docs/fleet-file.md).

Pure (no Django, no database): `schema.json` is the format, `normalise` checks a document against
it and turns it into a `Fleet` (objects by kind and key, references by name), `diff` compares two
fleets in the order an apply must follow, `text` reads and writes YAML. The service
(steering.services.fleet) builds the live fleet from the database and applies a diff through the
topology services; the API (steering.api.views.fleet) and steerctl only move documents around.
"""

from __future__ import annotations

from steering.fleetfile.normalise import (
    KINDS,
    SECTIONS,
    Fleet,
    FleetObject,
    InvalidFleet,
    build,
    fingerprint,
    load,
    to_document,
)

__all__ = ["KINDS", "SECTIONS", "Fleet", "FleetObject", "InvalidFleet", "build", "fingerprint", "load",
           "to_document"]
