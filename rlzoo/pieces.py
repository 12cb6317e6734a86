"""Shared Config pieces: the settings many algorithms have in common,
declared, documented and validated once.

An algorithm's `Config` inherits the pieces it uses and redeclares a field
only to change its default to the paper's:

    @dataclasses.dataclass(frozen=True)
    class Config(pieces.RatioClip, pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation):
        kl_coef: float = 0.04
        \"\"\"β: weight of the KL-to-reference term (the paper's value).\"\"\"

Every Config (pieces or not) derives from `ConfigBase`, whose
`__post_init__` rejects, for every field of every algorithm: non-finite
floats, values outside the field's declared range (`setting(..., ge=0)`),
and `Literal` values outside their choices. A Config that needs its own
checks calls `super().__post_init__()` first.

The pieces also say which Rollout fields and policy outputs they read
(`ConfigBase.needs()`): a non-zero `kl_coef` needs `ref_logprobs`, a non-zero
`entropy_coef` needs `entropy`. The registry adds these to every
algorithm's own `needs`, so no algorithm file repeats them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from rlzoo.ops import Aggregation, KLEstimator, PairMode


def setting(default: Any, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None) -> Any:
    """A dataclass field with a declared range (checked by `ConfigBase`).
    `None` values are always allowed (they mean "off" or "same as ...")."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return dataclasses.field(default=default, metadata={"range": bounds})


_CHECKS = {
    "ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<"),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """The root of every algorithm Config: range and finiteness checks, and
    the needs of the shared pieces."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            where = f"{self.settings_scope()}{_flag(field.name)}"
            choices = _literal_choices(hints.get(field.name))
            if choices is not None and value not in choices:
                raise ValueError(f"{where} must be one of {', '.join(map(str, choices))}; got {value!r}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(value):
                    raise ValueError(f"{where} must be finite; got {value!r}")
                for check, bound in field.metadata.get("range", {}).items():
                    holds, symbol = _CHECKS[check]
                    if not holds(value, bound):
                        raise ValueError(f"{where} must be {symbol} {bound}; got {value!r}")
            elif isinstance(value, tuple):
                if any(isinstance(v, float) and not math.isfinite(v) for v in value):
                    raise ValueError(f"{where} must hold finite numbers; got {value!r}")

    def settings_scope(self) -> str:
        """The prefix of this Config's error messages: the algorithm's module."""
        return f"{type(self).__module__.rsplit('.', 1)[-1]}: "

    def needs(self) -> frozenset[str]:
        """Rollout fields and policy outputs the shared pieces read under these values."""
        out: set[str] = set()
        for klass in type(self).__mro__:
            piece_needs = klass.__dict__.get("_piece_needs")
            if piece_needs is not None:
                out |= piece_needs(self)
        return frozenset(out)


def _literal_choices(tp: Any) -> tuple | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if typing.get_origin(arg) is typing.Literal:
                return typing.get_args(arg)
        return None
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    return None


@dataclasses.dataclass(frozen=True)
class KLPenalty(ConfigBase):
    """A KL-to-reference term β_KL · D_KL(π_θ || π_ref), estimated per token."""

    kl_in_loss: typing.ClassVar[bool] = True
    """False for algorithms that fold the KL into the reward at the behaviour
    policy (outside the gradient), where there is no ratio to weight it by."""

    kl_coef: float = setting(0.0, ge=0.0)
    """Weight of the KL-to-reference term (0 drops the reference model)."""
    kl_estimator: KLEstimator = "k3"
    """KL estimator (k1, k2, k3; k3 is the low-variance estimator)."""
    kl_importance_weighted: bool = False
    """Multiply each token's KL term by its importance ratio π_θ/π_old
    (differentiable, unclipped), which changes the KL gradient even on-policy
    (TRL GRPOTrainer's default `use_bias_correction_kl=True`; DeepSeek-V3.2)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl_importance_weighted and not self.kl_in_loss:
            raise ValueError(
                f"{self.settings_scope()}--kl-importance-weighted has nothing to weight: this algorithm "
                "puts the KL penalty in the reward (at the behaviour policy, outside the gradient)"
            )

    def _piece_needs(self) -> frozenset[str]:
        return frozenset({"ref_logprobs"} if self.kl_coef else ())


@dataclasses.dataclass(frozen=True)
class EntropyBonus(ConfigBase):
    """An entropy bonus −c_H · H(π_θ) on the trained tokens."""

    entropy_coef: float = 0.0
    """Entropy bonus coefficient (0: off; negative penalises entropy)."""

    def _piece_needs(self) -> frozenset[str]:
        return frozenset({"entropy"} if self.entropy_coef else ())


@dataclasses.dataclass(frozen=True)
class RatioClip(ConfigBase):
    """PPO's trust region: the ratio is clipped to [1 − ε_low, 1 + ε_high]."""

    clip_eps_low: float = setting(0.2, ge=0.0)
    """ε_low: lower clip bound 1 − ε_low of the ratio."""
    clip_eps_high: float | None = setting(None, ge=0.0)
    """ε_high: upper clip bound 1 + ε_high (None: same as clip_eps_low)."""

    @property
    def clip_bounds(self) -> tuple[float, float]:
        """(ε_low, ε_high) with ε_high defaulting to ε_low."""
        return self.clip_eps_low, self.clip_eps_low if self.clip_eps_high is None else self.clip_eps_high


@dataclasses.dataclass(frozen=True)
class DualClip(ConfigBase):
    """Dual clip (Ye et al. 2020, arXiv:1912.09729): on negative advantages
    the clipped objective is bounded below by c · A."""

    dual_clip: float | None = setting(None, gt=1.0)
    """Dual-clip bound c > 1 on negative-advantage tokens (None: off)."""


@dataclasses.dataclass(frozen=True)
class GroupStd(ConfigBase):
    """Group z-scores (r − mean) / (std + ε_std)."""

    std_eps: float = setting(1e-6, gt=0.0)
    """ε_std added to the group std."""


@dataclasses.dataclass(frozen=True)
class TokenAggregation(ConfigBase):
    """How per-token losses are averaged over the minibatch (`ops.token_weights`)."""

    aggregation: Aggregation = "token-mean"
    """Aggregation of the per-token losses."""


@dataclasses.dataclass(frozen=True)
class Pairing(ConfigBase):
    """Online preference pairs built from each group of K sampled rows."""

    pair_mode: PairMode = "best_vs_worst"
    """How pairs are built from a group of K > 2 rows: best_vs_worst (one pair
    per group) or all_pairs (every decided pair, groups of 2)."""


@dataclasses.dataclass(frozen=True)
class PolicyLoss(RatioClip, KLPenalty, EntropyBonus, TokenAggregation):
    """The tail of a clipped policy loss: clip bounds, KL, entropy, aggregation."""
