"""A JSON renderer for the API's big reads: orjson, about ten times faster than the json module.

The topology snapshot of a 20,000-backend fleet is 10 MB of JSON; DRF's JSONRenderer (the json
module) took a quarter of its server time. Same media type and the same compact output; values
orjson does not know (Decimal, lazy strings...) go through DRF's own encoder. An `indent` asked
for in the Accept header is honoured by falling back to DRF's renderer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder

_DRF_DEFAULT = JSONEncoder().default


class FastJSONRenderer(JSONRenderer):
    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: Mapping[str, Any] | None = None) -> bytes:
        if data is None:
            return b""
        if self.get_indent(accepted_media_type or "", renderer_context or {}):
            return bytes(super().render(data, accepted_media_type, renderer_context))
        # Datetimes through DRF too: it writes UTC as "Z", orjson as "+00:00".
        return orjson.dumps(data, default=_DRF_DEFAULT,
                            option=orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME)
