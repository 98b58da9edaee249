from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from steering.choices import ChangeSource

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


@dataclass(frozen=True)
class Actor:
    """Who is acting, from where, under which request: copied into every Change."""

    name: str
    source: str
    user: AbstractBaseUser | AnonymousUser | None = None
    request_id: str = ""
    # The API token the request authenticated with; none for a session, a command or the system.
    token_id: int | None = None
    token_name: str = ""

    @classmethod
    def system(cls, name: str, request_id: str = "") -> Actor:
        return cls(name=f"system:{name}", source=ChangeSource.SYSTEM, user=None, request_id=request_id)

    @property
    def user_id(self) -> int | None:
        user = self.user
        if user is None or not getattr(user, "is_authenticated", False):
            return None
        return int(user.pk) if user.pk is not None else None
