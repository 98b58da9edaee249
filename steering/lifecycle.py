"""How long-running commands (runstack, the agents, the demos) learn they should stop."""

from __future__ import annotations

import signal
from typing import Any


class StopRequest:
    """Set by SIGINT or SIGTERM, or by the caller (a child died): a loop polls it and ends cleanly."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, *_: Any) -> None:
        self.requested = True

    def set(self) -> None:
        self.requested = True

    def __call__(self) -> bool:
        return self.requested
