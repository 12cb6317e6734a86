"""BNPO: Beta Normalization Policy Optimization.

Paper: Changyi Xiao, Mengdi Zhang and Yixin Cao, "BNPO: Beta Normalization
Policy Optimization", 2025, arXiv:2506.02864. Code:
https://github.com/changyi7231/BNPO.

For a binary reward R(q, o) ∈ {0, 1}, the success probability of prompt q
is p(q) = E_{o~π}[R(q, o)]. BNPO divides the centred reward by a Beta
density evaluated at p(q):

    A_{α,β}(q, o) = (R(q, o) − p(q)) / f(p(q); α, β),    f(p; α, β) = p^{α−1} (1 − p)^{β−1} / B(α, β)

with p(q) estimated by the mean reward of the K responses to q. The shape
(α, β) is adapted every batch: the per-prompt success rates p of the batch
are modelled as Beta(a, b), fitted by the method of moments from their mean
μ and (unbiased) variance σ²,

    a = (μ(1 − μ)/σ² − 1) · μ,    b = (μ(1 − μ)/σ² − 1) · (1 − μ),

and the variance-minimising normaliser is (α, β) = (1 + a/3, 1 + b/3),
each clamped to ≥ 1 as in the official code. The policy loss is PPO's
clipped surrogate on these advantages (official recipe: ε_low = 0.2,
ε_high = 0.28, dual clip c = 10, per-response token sum, no KL): exactly
`grpo`'s loss with other defaults, so this file is an estimator and
`get_algorithm("bnpo")` pairs it with `grpo`'s loss at `clip_eps_high` =
0.28, `dual_clip` = 10, aggregation seq-mean-token-sum, `kl_coef` = 0.

Special cases (binary rewards), derived from f:
- (α, β) = (1, 1): f ≡ 1 (the uniform density), so A = R − p: REINFORCE with
  the group-mean baseline p. With ratio 1 and no clipping the gradient is the
  registered `reinforce` gradient (tested).
- (α, β) = (3/2, 3/2): f(p) = √(p(1 − p)) / B(3/2, 3/2) with
  B(3/2, 3/2) = Γ(3/2)²/Γ(3) = π/8, so A = (π/8)(R − p)/√(p(1 − p)). For
  binary rewards √(p(1 − p)) is the group's population std, so this is GRPO's
  advantage (std with ddof = 0, no ε) times π/8 (tested).
Because 1/f(p) is constant within a group, the advantages have zero mean in
every group, and a group whose rewards are all equal gets R − p = 0.

Rewards outside {0, 1}: like the official code, rewards are mapped to [0, 1]
by (R − r_min)/(r_max − r_min) first. p is clipped to [0, 1] before the
density is evaluated (the official code asserts it), and 1/f is clamped to
[0, 10⁶] (official). At p ∈ {0, 1} with α or β > 1, f = 0 and 1/f hits the
clamp, but R − p = 0 there for binary rewards.

Advantage decomposition (paper section on composite rewards;
`use_advantage_decomposition` in the official trainer): with
`decompose=True` every column of `reward_components` gets its own BNPO
advantage (with its own fitted (α, β)) and the advantages are averaged:
A = (1/C) Σ_c A_{α_c,β_c}(R_c).

Edge cases (choices where the official code has no answer): a batch with
fewer than two groups, or with σ² = 0 (every prompt has the same success
rate; the official code yields NaN), uses (α, β) = (1, 1). For K = 1 the
baseline is p = 0 (official). The fit couples the whole batch, but it is
computed in `advantages`, once per batch, outside the loss.

Closest relative: GRPO (a different, adaptive normaliser in place of the
group std; here with DAPO-style asymmetric clipping and a token-sum loss).
Equivalents: the official repository's verl fork, `adv_estimator=bnpo`
(`recipe/bnpo/src/bnpo_ray_trainer.py`, `compute_bnpo_outcome_advantage`).
TRL's `GRPOTrainer(loss_type="bnpo")` is unrelated: it is an aggregation
mode (token mean over the local batch), not this estimator.

Verified against: `changyi7231/BNPO` `recipe/bnpo/src/bnpo_ray_trainer.py`
(advantage, moment fit, 1 + a/3 rule, clamps, decomposition) and
`recipe/bnpo/run.sh` (loss settings).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.scipy.stats import beta as beta_dist

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.ConfigBase):
    beta_params: tuple[float, float] | None = None
    """Fixed (α, β) of the normalising Beta density; None adapts them to every
    batch by the method-of-moments rule (the paper's BNPO). (1, 1) is REINFORCE
    with baseline p."""
    reward_min: float = 0.0
    """r_min: rewards are mapped to [0, 1] by (R − r_min)/(r_max − r_min)."""
    reward_max: float = 1.0
    """r_max (see reward_min)."""
    max_inverse_density: float = pieces.setting(1e6, gt=0.0)
    """Clamp on 1/f(p) (official)."""
    decompose: bool = False
    """Advantage decomposition: average the BNPO advantages of the columns of
    `reward_components` instead of normalising `rewards`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reward_max <= self.reward_min:
            raise ValueError(f"bnpo: --reward-max must be > --reward-min; got {self.reward_max!r} <= {self.reward_min!r}")
        if self.beta_params is not None and (len(self.beta_params) != 2 or min(self.beta_params) <= 0):
            raise ValueError(f"bnpo: --beta-params must be two positive numbers (α, β); got {self.beta_params!r}")


def fit_beta_params(p: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(α, β) from the per-prompt success rates p [G]: method-of-moments Beta(a, b)
    fit, then (max(1 + a/3, 1), max(1 + b/3, 1)); (1, 1) when σ² = 0 or G < 2."""
    if p.shape[0] < 2:
        return jnp.float32(1.0), jnp.float32(1.0)
    mean, var = jnp.mean(p), jnp.var(p, ddof=1)
    ok = (var > 0) & (jnp.max(p) > jnp.min(p))  # equal rates: var can be an ulp above 0
    scale = mean * (1.0 - mean) / jnp.where(ok, var, 1.0) - 1.0
    alpha = jnp.where(ok, jnp.maximum(1.0 + scale * mean / 3.0, 1.0), 1.0)
    beta = jnp.where(ok, jnp.maximum(1.0 + scale * (1.0 - mean) / 3.0, 1.0), 1.0)
    return alpha, beta


def _bnpo_advantage(rewards: jax.Array, group_size: int, cfg: Config) -> jax.Array:
    """[B]: (R − p) / f(p; α, β) for one reward signal."""
    scores = (rewards - cfg.reward_min) / (cfg.reward_max - cfg.reward_min)
    if group_size > 1:
        p = ops.group_mean(scores, group_size)
    else:
        p = jnp.zeros_like(scores)
    if cfg.beta_params is None:
        alpha, beta = fit_beta_params(ops.group_view(p, group_size)[:, 0])
    else:
        alpha, beta = cfg.beta_params
    log_density = beta_dist.logpdf(jnp.clip(p, 0.0, 1.0), alpha, beta)
    inverse = jnp.exp(jnp.minimum(-log_density, jnp.log(cfg.max_inverse_density)))
    return inverse * (scores - p)


def advantages(rollout, cfg: Config, state):
    """A_i = (R_i − p_g) / f(p_g; α, β) broadcast to the tokens of row i."""
    if cfg.decompose:
        components = rollout.reward_components
        adv = jnp.mean(jnp.stack(
            [_bnpo_advantage(components[:, c], rollout.group_size, cfg) for c in range(components.shape[1])]
        ), axis=0)
    else:
        adv = _bnpo_advantage(rollout.rewards, rollout.group_size, cfg)
    return ops.broadcast_to_tokens(adv, rollout), state


def _needs(cfg: Config) -> frozenset[str]:
    return frozenset({"reward_components"} if cfg.decompose else ())


register(Algorithm(
    name="bnpo",
    family="advantage",
    paper="BNPO: Beta Normalization Policy Optimization (Xiao, Zhang and Cao, 2025, arXiv:2506.02864)",
    Config=Config,
    advantages=advantages,
    loss=None,
    default_loss="grpo",
    loss_defaults={"clip_eps_high": 0.28, "dual_clip": 10.0, "aggregation": "seq-mean-token-sum", "kl_coef": 0.0},
    needs=_needs,
))
