"""The spec's ``policy:`` section: a per-recipient policy as ordered, readable rules (issue 27).

A policy learned by ``loopexp policy`` (:mod:`loopexp.learn.policy`) goes into the next spec as
rules read top to bottom — the first rule whose conditions all hold gives the recipient's variant —
plus an exploration share (default 10 %) that stays randomised uniformly over the variants, so the
next iteration can measure the policy's realised gain against it. :mod:`loopexp.assignment.policy`
applies it and records each recipient's ``propensity``.

```yaml
policy:
  name: per segment
  kind: segment
  exploration: 0.1
  rules:
    - when: [{feature: segment, op: "==", value: inactive}]
      action: b
    - action: a
```
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from loopexp.design.parts import SpecModel

#: Pre-treatment features the engine computes (loopexp.metrics.features), in words for the rules.
FEATURE_WORDS: dict[str, str] = {
    "recency_days": "days since last click",
    "frequency": "clicks in the last 90 days",
    "tenure_days": "days on the list",
    "past_click_hour": "past click hour",
    "machine_open": "opens by machine (Apple MPP)",
}
#: The value of a history feature for a recipient without that history (never clicked: no hour).
NONE_VALUE = -1.0
FEATURE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"


class PolicyCondition(SpecModel):
    """``feature op value``: ``segment`` compares with a segment name, other features numbers."""

    feature: Annotated[str, Field(pattern=FEATURE_PATTERN)]
    op: Literal["<", ">=", "==", "!="]
    value: float | str

    @model_validator(mode="after")
    def _typed(self) -> PolicyCondition:
        if self.op in ("<", ">=") and isinstance(self.value, str):
            raise ValueError(f"{self.feature} {self.op} needs a number; got {self.value!r}")
        return self

    def words(self) -> str:
        """The condition in words: ``inactive``, ``past click hour ≥ 17``."""
        if self.feature == "segment":
            return str(self.value) if self.op == "==" else f"not {self.value}"
        name = FEATURE_WORDS.get(self.feature, self.feature)
        if self.op in ("==", "!="):
            return f"{name} {'=' if self.op == '==' else '≠'} {self.value}"
        value = float(self.value)
        if self.feature == "machine_open":
            return name if self.op == ">=" else f"no {name}"
        shown = f"{value:g}"
        if self.op == "<":
            none = " (or none)" if value > NONE_VALUE and self.feature == "past_click_hour" else ""
            return f"{name} < {shown}{none}"
        return f"{name} ≥ {shown}"


class PolicyRule(SpecModel):
    """All ``when`` conditions hold → ``action`` (a variant id); no condition: everyone left."""

    when: list[PolicyCondition] = Field(default_factory=list)
    action: Annotated[str, Field(min_length=1)]

    def words(self) -> str:
        """``inactive → variant b``; ``everyone → variant a`` for a rule without condition."""
        if not self.when:
            return f"everyone → variant {self.action}"
        return " and ".join(c.words() for c in self.when) + f" → variant {self.action}"


class PolicySettings(SpecModel):
    """A learned per-recipient policy and the share still randomised beside it."""

    name: str = "policy"
    kind: Literal["single", "segment", "tree"] = "segment"
    rules: list[PolicyRule] = Field(default_factory=list)
    """The deployed rules; none (``policy: {}``): no policy yet — the weights split everyone, and
    ``loopexp run`` learns one from this send for the next spec."""
    exploration: Annotated[float, Field(gt=0, le=1)] = 0.10
    """Share of recipients (by salted hash) randomised uniformly over the variants: the policy's
    comparison group, and what keeps the next policy learnable. Never 0: a policy sent to everyone
    could no longer be measured."""
    projected_gain: float | None = None
    """The gain over the best single arm ``loopexp policy`` projected (AIPW, held-out)."""
    projected_gain_ci: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _ends_with_everyone(self) -> PolicySettings:
        if self.rules and self.rules[-1].when:
            raise ValueError(
                "the last policy rule must have no `when` (everyone not matched above); add "
                "`- action: <variant>` at the end"
            )
        return self

    @property
    def deployed(self) -> bool:
        """True when there are rules to apply (else the spec only asks to learn a policy)."""
        return bool(self.rules)

    def features(self) -> list[str]:
        """Feature columns the rules read (``segment`` included), in first-use order."""
        names: list[str] = []
        for rule in self.rules:
            names += [c.feature for c in rule.when if c.feature not in names]
        return names

    def words(self) -> list[str]:
        """Each rule in words, in order."""
        return [r.words() for r in self.rules]
