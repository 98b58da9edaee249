"""The web process's garbage collector: short pauses while a thousand long-polls are parked.

A parked `?wait=` or agent long-poll is a hundred or so live objects (its connection, scope,
coroutine frames and futures). CPython's full collection walks every live object, so with a NOC's
worth of waiters each full pass took one to three hundred milliseconds on the 2-core benchmark
machine, and whichever drain it landed in answered that much later (bench/README.md, "A drain
while 1,000 operators wait"). Two standard remedies, both from the `gc` module's documentation:

- `gc.freeze()` once the process has loaded what every request uses (Django's apps, the URL
  resolver's caches, DRF's serializers): those objects live as long as the process, and no later
  collection walks them again.
- a higher first-generation threshold, so young objects are examined in fewer, larger batches
  and a full pass comes an order of magnitude less often. A request makes its garbage in reference
  cycles mostly (an exception's traceback, a form and its bound fields), which reference counting
  alone never frees, so the collector stays on.
"""

from __future__ import annotations

import gc

from django.urls import get_resolver

# Allocations (minus frees) of container objects before a young-generation pass; CPython's default
# is 700. Older generations keep their default multipliers (10, 10).
YOUNG_THRESHOLD = 20_000


def settle_web_process() -> None:
    """Call once, after the ASGI application is built and before it serves."""
    get_resolver().reverse_dict  # noqa: B018  (built lazily on first use; build it now, then freeze it)
    gc.collect()
    gc.freeze()
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
