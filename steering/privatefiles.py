"""Files only their owner may read (tokens, state, passwords, the local secret key).

Standard library only: the agents on PoP hosts and the settings module use it too.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path


def write_private(path: str | os.PathLike[str], text: str, *, sync: bool = False) -> None:
    """`text` into `path`, readable by this user only (0600 from the moment the file exists),
    replaced atomically (a reader sees the old file or the new one, never half of one)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_or_create_secret(path: str | os.PathLike[str], nbytes: int = 48) -> str:
    """The secret kept in `path`, made (0600, random) by the first process that asks. Several
    processes starting at once agree on one: the file appears whole, by a hard link that fails
    for all but the first."""
    target = Path(path)
    try:
        return target.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_urlsafe(nbytes) + "\n")
        try:
            os.link(tmp, target)
        except FileExistsError:
            pass  # another process was first: use its secret
    finally:
        os.unlink(tmp)
    return target.read_text(encoding="utf-8").strip()
