"""The topology's orjson renderer says what DRF's own JSON renderer says."""

from __future__ import annotations

import datetime
import decimal
import json
import uuid

from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer

from steering.api.renderers import FastJSONRenderer

DATA = {
    "when": datetime.datetime(2026, 11, 30, 8, 0, 1, 250000, tzinfo=datetime.UTC),
    "money": decimal.Decimal("12.50"), "id": uuid.UUID(int=7), "label": gettext_lazy("ready"),
    "nested": [{"w": 100, "f": 0.1, "none": None, "ok": True, "unicode": "Zürich"}], 3: "int key",
}


def test_it_renders_what_drf_renders() -> None:
    ours = json.loads(FastJSONRenderer().render(DATA, "application/json", {}))
    drf = json.loads(JSONRenderer().render(DATA, "application/json", {}))
    assert ours == drf


def test_an_indent_asked_for_is_honoured_and_nothing_renders_empty() -> None:
    pretty = FastJSONRenderer().render({"a": [1]}, "application/json; indent=2", {})
    assert pretty.decode() == '{\n  "a": [\n    1\n  ]\n}'
    assert FastJSONRenderer().render(None) == b""
