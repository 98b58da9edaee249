from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

LATITUDE_VALIDATORS = [MinValueValidator(-90.0), MaxValueValidator(90.0)]
LONGITUDE_VALIDATORS = [MinValueValidator(-180.0), MaxValueValidator(180.0)]
WEIGHT_VALIDATORS = [MinValueValidator(0), MaxValueValidator(256)]
PORT_VALIDATORS = [MinValueValidator(1), MaxValueValidator(65535)]


class TrackedModel(models.Model):
    """A model written only through services: revision drives ETag / If-Match."""

    revision = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    @property
    def etag(self) -> str:
        return f'"{self._meta.model_name}-{self.pk}-r{self.revision}"'


class StateVersion(models.Model):
    """One row: the version of the whole picture, bumped inside every state-changing transaction.

    The row lock taken by the bump orders commits, so live deltas carry strictly increasing
    versions and a browser can tell when it missed one.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="%(app_label)s_%(class)s_singleton"),
        ]
