"""MADPO: Margin-Adaptive Direct Preference Optimization.

Paper: Rho, "Margin Adaptive DPO: Leveraging Reward Model for Granular
Control in Preference Optimization", 2025, arXiv:2510.05342 (section 3).

A reward model's margin h_φ = r_φ(y_w) − r_φ(y_l) for each pair sets a
per-pair weight on the DPO loss (instance-level, unlike β-DPO's batch β):

    c(h)   = c_min + (c_max − c_min) / (1 + ((c_max − 1)/(1 − c_min)) e^{λ(|h| − τ)})
    w(h)   = σ(c(|h|) h) / σ(h)      for h > −τ,     w(h) = 1 for h ≤ −τ
    L      = −w(h_φ) log σ(βΔ),      Δ = h_θ(y_w) − h_θ(y_l)

c decreases from ≈ c_max at h = 0 through exactly 1 at |h| = τ to c_min, so
for a pair the reward model agrees with (h > 0) the weight is > 1 while
h < τ (hard pair: the effective target margin is amplified) and < 1 past τ
(easy pair: damped); w(0) = w(τ) = 1, w > 0 always (no pair is discarded),
and pairs the reward model strongly disputes (h ≤ −τ) keep the plain DPO
weight. c_max = 1 gives c ≡ 1, w ≡ 1: DPO.

The margin comes from `rollout.rewards` (the reward-model scores that ranked
the pair, h_φ ≥ 0) or, with `margin_component = j`, from
`reward_components[:, j]` when the pair's label comes from elsewhere (the
paper's setting: human labels, a separately trained reward model).

Defaults from the official `MADPOLoss` (β = 0.1, c_max = 2, c_min = 0.5,
λ = 1, τ = 2); the paper tunes c and τ per dataset. Verified against
sirano1004/Margin-Apative-Direct-Preference-Optimization
`utils/loss_functions.py` (`MADPOLoss.coef`, `forward`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.Pairing):
    beta: float = pieces.setting(0.1, gt=0.0)
    """β: inverse temperature of the implicit reward."""
    c_max: float = pieces.setting(2.0, ge=1.0)
    """c at margin 0: the amplification of the hardest pairs (≥ 1)."""
    c_min: float = pieces.setting(0.5, ge=0.0, lt=1.0)
    """c as |h| → ∞: the damping of the easiest pairs (< 1)."""
    lam: float = pieces.setting(1.0, ge=0.0)
    """λ: steepness of the transition of c around τ."""
    tau: float = pieces.setting(2.0, ge=0.0)
    """τ: reward margin where c = 1; pairs with h ≤ −τ keep weight 1."""
    margin_component: int | None = pieces.setting(None, ge=0)
    """None: h_φ from `rewards`; j: h_φ from `reward_components[:, j]`."""


def coefficient(margin, cfg: Config):
    """c(|h|): c_max near 0, exactly 1 at |h| = τ, c_min far out."""
    ratio = (cfg.c_max - 1.0) / (1.0 - cfg.c_min)
    growth = jnp.exp(jnp.minimum(cfg.lam * (jnp.abs(margin) - cfg.tau), 80.0))
    return cfg.c_min + (cfg.c_max - cfg.c_min) / (1.0 + ratio * growth)


def pair_weight(margin, cfg: Config):
    """w(h) = σ(c h)/σ(h) for h > −τ, 1 otherwise (no gradient: a data weight)."""
    c = coefficient(margin, cfg)
    ratio = jnp.exp(jax.nn.log_sigmoid(c * margin) - jax.nn.log_sigmoid(margin))
    return jnp.where(margin > -cfg.tau, ratio, 1.0)


def loss(stats, rollout, adv, cfg: Config, state):
    """Mean over decided pairs of −w(h_φ) log σ(βΔ)."""
    scores = ops.pair_scores(stats, rollout)
    source = rollout.rewards if cfg.margin_component is None else rollout.reward_components[:, cfg.margin_component]
    margin = ops.pair_margin(source.astype(jnp.float32), scores.sign)
    weight = jax.lax.stop_gradient(pair_weight(margin, cfg))
    per_pair = weight * ops.logistic_pair_loss(cfg.beta * scores.margin)
    decided = jnp.maximum(jnp.sum(scores.weight), 1.0)
    extra = {"margin_weight": jnp.sum(scores.weight * weight) / decided}
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta, extra)


register(Algorithm(
    name="madpo",
    family="preference",
    paper="Margin Adaptive DPO: Leveraging Reward Model for Granular Control in Preference Optimization (Rho, 2025, arXiv:2510.05342)",
    Config=Config,
    advantages=ops.pair_sign_targets,
    loss=loss,
    needs=lambda cfg: frozenset(
        {"ref_logprobs"} | ({"reward_components"} if cfg.margin_component is not None else set())
    ),
    pairwise=True,
    prepare=pair_groups,
))
