"""The web process settles its garbage collector when the ASGI app is built (steering.gcpolicy):
what it loaded at start is frozen, URL resolver caches included, and young objects are examined in
larger batches. What that buys is measured, not asserted: bench/operation_wait_bench.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from steering.gcpolicy import YOUNG_THRESHOLD
from tests.support import ROOT

PROBE = """
import gc, json
import config.asgi
from django.urls import get_resolver
print(json.dumps({"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold(),
                  "resolver_built": get_resolver()._populated}))
"""


def test_the_asgi_app_freezes_what_it_loaded_and_raises_the_young_threshold(tmp_path: Path) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "STEERING_VAR_DIR": str(tmp_path),
           "STEERING_LOCAL_SECRET_KEY": "1"}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    state = json.loads(done.stdout.strip().splitlines()[-1])
    # Django, DRF, the URLconf and the views: tens of thousands of objects no collection walks again.
    assert state["frozen"] > 20_000, state
    assert state["threshold"][0] == YOUNG_THRESHOLD, state
    assert state["resolver_built"] is True, state
