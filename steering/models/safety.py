"""Safety rules: assertions about the fleet the guard holds every action to (ARC's safety rules).

Three kinds, each with its scope and threshold:

- `min_dns_regions`: at least `threshold` regions keep answering in DNS for `service`;
- `min_announcing_pops`: at least `threshold` PoPs keep announcing `prefix`;
- `max_pool_out_percent`: never more than `threshold` % of `pool`'s backends (of every pool when
  `pool` is empty) out of service at once.

An action that would break an enabled rule is refused with 409 `safety_rule` (unless forced with
its own reason); the what-if lists the rules it would break (steering.safety decides).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from steering.choices import SafetyRuleKind
from steering.models.base import TrackedModel
from steering.models.pools import Pool
from steering.models.topology import AnycastPrefix, Service

# Which scope field each kind needs; the others stay empty.
SCOPE_FIELD = {
    SafetyRuleKind.MIN_DNS_REGIONS: "service",
    SafetyRuleKind.MIN_ANNOUNCING_POPS: "prefix",
    SafetyRuleKind.MAX_POOL_OUT_PERCENT: "pool",
}
SCOPE_OPTIONAL = {SafetyRuleKind.MAX_POOL_OUT_PERCENT}  # no pool: the rule holds for every pool


class SafetyRule(TrackedModel):
    slug = models.SlugField(max_length=50, unique=True)
    kind = models.CharField(max_length=32, choices=SafetyRuleKind.choices)
    # PROTECT: deleting what a rule guards must not silently delete the rule (the API answers in_use).
    service = models.ForeignKey(Service, null=True, blank=True, on_delete=models.PROTECT, related_name="safety_rules")
    prefix = models.ForeignKey(AnycastPrefix, null=True, blank=True, on_delete=models.PROTECT,
                               related_name="safety_rules")
    pool = models.ForeignKey(Pool, null=True, blank=True, on_delete=models.PROTECT, related_name="safety_rules")
    threshold = models.PositiveIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(100_000)],
        help_text="min_dns_regions / min_announcing_pops: the least count; max_pool_out_percent: the most %.")
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        super().clean()
        errors: dict[str, list[str]] = {}
        kind = SafetyRuleKind(self.kind) if self.kind in SafetyRuleKind.values else None
        if kind is None:
            return  # the field's own choices validation says so
        needed = SCOPE_FIELD[kind]
        for name in SCOPE_FIELD.values():
            given = getattr(self, f"{name}_id") is not None
            if name == needed and not given and kind not in SCOPE_OPTIONAL:
                errors[name] = [f"A {kind.value} rule names its {name}."]
            elif name != needed and given:
                errors[name] = [f"A {kind.value} rule has no {name}; it is scoped by {needed}."]
        if kind == SafetyRuleKind.MAX_POOL_OUT_PERCENT and self.threshold is not None and self.threshold > 100:
            errors["threshold"] = ["A share of a pool is at most 100 (%)."]
        if errors:
            raise ValidationError(errors)
