"""The body a check's `body_match` is looked for in: chunked transfer coding removed.

A server may send the body chunked; a match string that straddles a chunk boundary is then
split by the chunk-size line in the raw bytes. Checks look in the raw bytes first (the common,
cheap case) and decode only when that fails and the response says it is chunked.
"""

from __future__ import annotations

import re

_CHUNKED = re.compile(rb"^transfer-encoding:[^\r\n]*\bchunked\b", re.IGNORECASE | re.MULTILINE)


def is_chunked(head: bytes) -> bool:
    return _CHUNKED.search(head) is not None


def dechunk(body: bytes) -> bytes:
    """Decode chunked transfer coding; a truncated body (cut at the read limit) keeps what arrived."""
    out = bytearray()
    pos = 0
    while True:
        line_end = body.find(b"\r\n", pos)
        if line_end < 0:
            break
        size_text = body[pos:line_end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            break
        if size == 0:
            break
        start = line_end + 2
        chunk = body[start:start + size]
        out += chunk
        if len(chunk) < size:
            break
        pos = start + size + 2  # the CRLF after the chunk data
    return bytes(out)


def contains(want: bytes, head: bytes, body: bytes) -> bool:
    return want in body or (is_chunked(head) and want in dechunk(body))
