"""What an action on a backend, pool, PoP or region touches."""

from __future__ import annotations

from django.db import models
from django.db.models import QuerySet

from steering.models import Backend, Pool, PoP, Region

Target = Backend | Pool | PoP | Region


def backends_under(target: Target) -> QuerySet[Backend]:
    qs = Backend.objects.all()
    if isinstance(target, Backend):
        return qs.filter(pk=target.pk)
    if isinstance(target, Pool):
        return qs.filter(pool=target)
    if isinstance(target, PoP):
        return qs.filter(pool__pop=target)
    if isinstance(target, Region):
        return qs.filter(pool__pop__region=target)
    raise TypeError(f"cannot act on {type(target).__name__}")


def pools_under(target: Target) -> QuerySet[Pool]:
    if isinstance(target, Pool):
        return Pool.objects.filter(pk=target.pk)
    if isinstance(target, PoP):
        return Pool.objects.filter(pop=target)
    if isinstance(target, Region):
        return Pool.objects.filter(pop__region=target)
    return Pool.objects.none()


def target_label(target: models.Model) -> str:
    if isinstance(target, Backend):
        return target.path
    return str(target)


def target_type(target: models.Model) -> str:
    return target._meta.model_name or type(target).__name__.lower()
