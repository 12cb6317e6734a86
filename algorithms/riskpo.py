"""RiskPO: Risk-based Policy Optimization.

Paper: Tao Ren, Jinyang Jiang, Hui Yang et al., "RiskPO: Risk-based Policy
Optimization via Verifiable Reward for LLM Post-Training", 2025,
arXiv:2510.00911. Code: https://github.com/RTkenny/RiskPO.

RiskPO replaces the mean-reward objective with a Mixed Value-at-Risk: a
weighted combination of the Range VaR over the quantile band [α, β] and the
lower-tail CVaR at α, which puts more weight on hard (low-reward) outcomes.
For a reward X with α- and β-quantiles a = F⁻¹(α), b = F⁻¹(β), the
score-function gradients are (paper, Theorem 1)

    ∇ RVaR_{α:β} = 1/(β − α) · E[ g(X; a, b) ∇log π ],   g(x; a, b) = (x − a)⁺ − (x − b)⁺ + a − b
    ∇ CVaR_α     = 1/α       · E[ c(X; a) ∇log π ],      c(x; a) = −(a − x)⁺
    MVaR         = (RVaR_{α:β} + ω · CVaR_α) / (1 + ω)

so the advantage of a response with reward X is

    A = [ g(X; a, b)/(β − α + ε) + ω · c(X; a)/(α + ε) ] / (1 + ω),   then A /= (std X + ε).

g(x; a, b) = clip(x, a, b) − b (the "natural baseline" a − b makes the
band's upper quantile the baseline), so every advantage is ≤ 0: responses
at or above the β-quantile get 0 and the rest are pushed down in proportion
to how far below it they fall; c is non-zero only below the α-quantile.
(A constant shift of the advantage has zero expected score-function
gradient, so this is still an estimator of ∇MVaR.)

Bundling: M prompts form a bundle; the k-th responses of its M prompts form
a "paper" whose score is the sum of their rewards, X_k = Σ_m r_{m,k}. The
quantiles a, b and the std are computed over the K papers of the bundle,
each paper's advantage goes to all its responses, and (credit "std") each
response's advantage is divided by its own prompt's reward std (replaced by
1 when ≤ 1e-3). With M = 1 a paper is a single response and the quantiles
are the group's. Quantiles are linear interpolations (`torch.quantile`'s
default, `jnp.quantile` here); stds are unbiased (ddof = 1), std = 1 for a
single paper.

Defaults are the released script (`run_qwen2.5_1.5b_MVaR_math.sh`): α = 0.2,
β = 0.9, ω = 1.5, credit "std", std normalisation on, natural baseline on,
no KL loss, verl's dual-clip PPO loss (ε = 0.2, c = 3, token mean). That
loss is GRPO's, so this file is the estimator only: `get_algorithm("riskpo")`
pairs it with `grpo`'s loss at `dual_clip` = 3, `kl_coef` = 0 and aggregation
token-mean. Two deviations, both documented:
- bundle_size defaults to 1, not the paper's 5: bundles need the number of
  groups in a batch to be a multiple of M, and the pairing of responses into
  papers by index within the group is arbitrary, so with M > 1 the
  advantages depend on the order of rows within a group (and of groups in the
  batch). With M = 1 the estimator is permutation-invariant.
- The official trainer also tracks the quantiles across steps (SGD on the
  pinball loss, `use_q_track_mode`); the values it tracks are written after
  the advantages of the step are computed, so the advantages use the batch
  quantiles, which is what this implementation computes. The tracking is not
  implemented. A summary of the paper quotes β = 0.8; the released script
  uses 0.9.

All-equal group (M = 1): a = b = X, so g = c = 0 and the advantages are 0.
Reduction: with α = 0, β = 1, ω = 0 and credit "uniform", a = min X and
b = max X, so g = X − max X and A = (X − max X)/(std X + ε): GRPO's advantage
minus a per-group constant. Centred within the group it is GRPO's advantage,
and the gradient differs from GRPO's by that constant times Σ∇log π (tested).

Closest relative: GRPO with a quantile-band baseline and a CVaR tail term.
Equivalents: the official verl fork, `adv_estimator=grpo_bundle_RVaR_quantile_tracking`;
none in TRL or mainline verl.

Verified against: `RTkenny/RiskPO` `verl/trainer/ppo/core_algos.py`
(`compute_grpo_bundle_rvar_outcome_advantage_quantile_tracking`),
`verl/trainer/ppo/ray_trainer.py` (bundle ids, order of the quantile tracking)
and `scripts/run_qwen2.5_1.5b_MVaR_math.sh`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.ConfigBase):
    alpha: float = pieces.setting(0.2, ge=0.0, le=1.0)
    """α: lower quantile level (start of the RVaR band, level of the CVaR tail)."""
    beta_quantile: float = pieces.setting(0.9, ge=0.0, le=1.0)
    """β: upper quantile level of the RVaR band."""
    mix_weight: float = pieces.setting(1.5, ge=0.0)
    """ω: weight of CVaR_α against RVaR_{α:β} (0: RVaR only)."""
    natural_baseline: bool = True
    """Keep the a − b term of g, i.e. use the upper quantile b as baseline (official)."""
    bundle_size: int = pieces.setting(1, ge=1)
    """M: prompts per bundle (the paper uses 5; see the module docstring)."""
    credit: Literal["std", "uniform"] = "std"
    """How a paper's advantage is shared: divided by each prompt's reward std, or copied."""
    normalise: bool = True
    """Divide the paper advantage by the std of the bundle's paper scores."""
    eps: float = pieces.setting(1e-6, gt=0.0)
    """ε in the quantile-level and std divisions."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta_quantile < self.alpha:
            raise ValueError(f"riskpo: --beta-quantile must be >= --alpha; got {self.beta_quantile!r} < {self.alpha!r}")


def _std(x, axis):
    """Unbiased std along `axis`; 1 when there is a single entry."""
    if x.shape[axis] < 2:
        return jnp.ones_like(jnp.sum(x, axis=axis, keepdims=True))
    return jnp.std(x, axis=axis, ddof=1, keepdims=True)


def mvar_advantage(rewards, group_size: int, cfg: Config):
    """[B]: the MVaR advantage of every response, bundles of `bundle_size` groups."""
    m = cfg.bundle_size
    groups = rewards.shape[0] // group_size
    if groups % m:
        raise ValueError(f"riskpo: {groups} groups do not split into bundles of {m}")
    grouped = rewards.reshape(groups // m, m, group_size)
    papers = grouped.sum(axis=1)                                        # [bundles, K]
    low = jnp.quantile(papers, cfg.alpha, axis=1, keepdims=True)
    high = jnp.quantile(papers, cfg.beta_quantile, axis=1, keepdims=True)
    band = jnp.clip(papers, low, high) - (high if cfg.natural_baseline else low)
    band = band / (cfg.beta_quantile - cfg.alpha + cfg.eps)
    tail = -jnp.maximum(low - papers, 0.0) / (cfg.alpha + cfg.eps)
    adv = (band + cfg.mix_weight * tail) / (1.0 + cfg.mix_weight)
    if cfg.normalise:
        adv = adv / (_std(papers, axis=1) + cfg.eps)
    adv = jnp.broadcast_to(adv[:, None, :], grouped.shape)
    if cfg.credit == "std":
        question_std = _std(grouped, axis=2)
        adv = adv / (jnp.where(question_std > 1e-3, question_std, 1.0) + cfg.eps)
    elif cfg.credit != "uniform":
        raise ValueError(f"riskpo: unknown credit {cfg.credit!r}; choose std or uniform")
    return adv.reshape(-1)


def advantages(rollout, cfg: Config, state):
    """The MVaR advantage of each response, broadcast to its tokens."""
    return ops.broadcast_to_tokens(mvar_advantage(rollout.rewards, rollout.group_size, cfg), rollout), state


register(Algorithm(
    name="riskpo",
    family="advantage",
    paper="RiskPO: Risk-based Policy Optimization via Verifiable Reward for LLM Post-Training (Ren et al., 2025, arXiv:2510.00911)",
    Config=Config,
    advantages=advantages,
    loss=None,
    default_loss="grpo",
    loss_defaults={"dual_clip": 3.0, "kl_coef": 0.0, "aggregation": "token-mean"},
))
