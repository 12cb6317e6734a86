"""CAPO: Curvature-Aware Policy Optimization (token-level masks).

Paper: Melo, Abate, Gal, "Stabilizing Policy Gradients for Sample-Efficient
Reinforcement Learning in LLM Reasoning", 2025, arXiv:2510.00819; code:
luckeciano/stable-pg-llm (`src/open_r1/grpo_entropy_trainer.py`).

CAPO models the update of the last (unembedding) layer, z = W h, to predict
per token how far one optimiser step moves the policy and the objective, and
masks out the tokens predicted to destabilise the step (< 8 % of tokens in
the paper). For token t with sampled y_t, advantage Â_t, next-token
distribution π and v = e_{y_t} − π, the token's gradient on W is
g = Â v ⊗ h; under a gradient step of size η the logits move by
Δz = η ‖h‖² Â v, and the official code predicts

    KL̂_t = ½ (vᵀ Δz)²                                   = ½ s² Â² ‖v‖⁴
    Ĵ_t  = η ⟨g, g⟩ + ½ η² Â [(vᵀ Δz')² − Δz'ᵀ F Δz']    = s Â² ‖v‖² + ½ s² Â³ (‖v‖⁴ − vᵀFv)

with s = η ‖h‖², Δz' = Δz/η and F = diag(π) − ππᵀ. As in the official
code, π is the policy renormalised over its top-k tokens, π̃_u = π_u / Σ_top-k π,
and e_{y_t} is the one-hot of y_t inside that subspace (0 when y_t is not
among the top k). With q = π̃(y_t) (0 outside), c = 1[y_t in top-k] and
S_n = Σ_u π̃_u^n:

    ‖v‖² = c − 2q + S₂,        vᵀFv = q − 2q² + S₃ − (q − S₂)².

A token is kept iff KL̂_t < τ_F and |Ĵ_t| < τ_H (the paper's symmetric
Hessian clipping). The loss is GRPO's clipped surrogate over the kept tokens
only: each row's loss is the mean over its kept tokens (a row with none
contributes 0) and the batch loss the mean over rows, as in the official
`_compute_final_loss` (seq-mean-token-mean with the curvature mask folded
into the completion mask; the KL and entropy terms, when on, are masked the
same way). The whole-minibatch row and token counts stay those of all
trained tokens, so microbatches add up exactly.

Still [inferred] (the loss cannot see what the official predictor uses):
- The official code uses the last-layer hidden states h_t and, in the CAPO
  recipe, an Adam model of the update (running moments per vocabulary row);
  it also has a plain-SGD model (`optim_model_type: sgd`,
  `sparse_optim_models/sparse_sgd_model.py`, effective gradient = g), which
  is the model used here. PolicyStats carries no h_t, so the per-token
  s_t = η ‖h_t‖² is replaced by one constant `logit_step` s. The official
  code has no such constant (it multiplies the scheduler's learning rate,
  1.5e-5 in the CAPO recipe, by ‖h_t‖² and the Adam preconditioner), so
  s = 0.01 is not calibrated against the paper: it is chosen so that typical
  tokens (|Â| ≈ 1, ‖v‖² ≈ ½) pass the paper's thresholds τ_F = 1e-4,
  τ_H = 0.01 and large-|Â| low-probability tokens are masked.
- The top-k size is k = 4 (the record's `topk`, read as `PolicyStats.topk_logprobs`); the official
  code uses the generation top_k (50 by TRL's default).

Not implemented: the official code's optional sentence- and batch-level
masks. There a "sentence" is a whole response: the per-row (and whole-batch)
mean of the token gradients A v_t ⊗ h_t, accumulated per vocabulary row over
the top-k ids of every token, gives a row-level Ĵ and KL̂ that drop the whole
row (or batch) when over τ. Forming that mean needs the hidden states h_t
and the top-k token ids, neither of which PolicyStats carries, and the
paper's CAPO recipe switches these masks off (README: CAPO =
`config_grpo_efficient_grpo_adam_fisher_mask_token_1e-4_hessian_mask_token_0.01`,
token taus only).

Reductions: with both thresholds None (∞) CAPO is GRPO (with kl_coef = 0,
std ε = 1e-4); the masked fraction is non-increasing in each threshold; the
loss is a masked sum of GRPO's per-token terms, each kept token's weight
rescaled from 1/L_b to 1/L'_b (L'_b = kept tokens of row b).

Equivalents: stable-pg-llm recipe
`config_grpo_efficient_grpo_adam_fisher_mask_token_1e-4_hessian_mask_token_0.01`
(fisher_token_mask_tau, hessian_token_mask_tau, hessian_symmetric_clipping).

Verified against: stable-pg-llm `src/open_r1/grpo_entropy_trainer.py`
(`_compute_token_level_gradients`: g = A (e_a − π) ⊗ h;
`_compute_and_log_hessian_coefficient`: full_update_term = lr·⟨g, g_eff⟩ +
½ lr² A((vᵀu)² − uᵀFu), u = G_eff h; `_compute_and_log_fisher_curvature`:
kl = ½ lr² (vᵀ G_eff h)²; `_compute_entropy`: π = softmax over the top-k
logits, one-hot of the action within the top-k; `_compute_hessian_token_mask`
/ `_compute_fisher_token_mask`: −τ_H < Ĵ < τ_H, KL̂ < τ_F;
`_compute_final_loss`: per-row mean over completion_mask · curvature mask,
then mean over rows; `_compute_advantages`: (r − mean_g)/(std_g + 1e-4) with
torch's unbiased std) and the recipe above (lr 1.5e-5, β = 0, 8 generations,
ε = 0.2 from TRL's default).

Cost: about 1.5-1.6x GRPO's loss-and-gradient time (benchmarks/results/loss_speed.json):
the curvature test renormalises every token's top-k distribution and takes
its power sums, and the kept-token normaliser is a second pass over the
batch; small next to the policy forward pass that produces the top-k.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.PolicyLoss, pieces.GroupStd):
    fisher_tau: float | None = pieces.setting(1e-4, gt=0.0)
    """τ_F: mask tokens with predicted KL̂ ≥ τ_F (None: no Fisher mask)."""
    hessian_tau: float | None = pieces.setting(0.01, gt=0.0)
    """τ_H: mask tokens with |Ĵ| ≥ τ_H (None: no Hessian mask)."""
    logit_step: float = pieces.setting(0.01, gt=0.0)
    """s = η‖h‖²: effective logit step of the SGD last-layer model [inferred: not a paper constant]."""
    scale_rewards: bool = True
    """GRPO's std-normalised group advantage (the CAPO recipe's trainer)."""
    std_eps: float = pieces.setting(1e-4, gt=0.0)
    """ε added to the group std (the official trainer's 1e-4)."""
    aggregation: ops.Aggregation = "seq-mean-token-mean"
    """Aggregation over the kept tokens (the official trainer's per-row mean, then mean over rows)."""


def curvature(logp, topk_logprobs, adv, logit_step: float):
    """(KL̂, Ĵ) per token under the SGD last-layer model in the top-k subspace
    (see the module docstring)."""
    log_mass = jax.nn.logsumexp(topk_logprobs, axis=-1)
    pi = jnp.exp(topk_logprobs - log_mass[..., None])
    # The top-k carry no token ids, so "y_t is among them" is decided by value.
    inside = logp >= topk_logprobs[..., -1]
    # A listed token has log π(y_t) ≤ log Σ_top-k π; the cap only guards inconsistent inputs.
    q = jnp.where(inside, jnp.exp(jnp.minimum(logp - log_mass, 0.0)), 0.0)
    s2 = jnp.sum(jnp.square(pi), axis=-1)
    s3 = jnp.sum(pi ** 3, axis=-1)
    v_sq = inside.astype(jnp.float32) - 2.0 * q + s2
    v_f_v = q - 2.0 * jnp.square(q) + s3 - jnp.square(q - s2)
    kl = 0.5 * jnp.square(logit_step * adv * v_sq)
    update = logit_step * jnp.square(adv) * v_sq + 0.5 * logit_step ** 2 * adv ** 3 * (jnp.square(v_sq) - v_f_v)
    return kl, update


def keep_mask(logp, topk_logprobs, adv, cfg: Config):
    """The tokens CAPO trains on (no gradient)."""
    kl, update = curvature(logp, topk_logprobs, adv, cfg.logit_step)
    keep = jnp.ones(logp.shape, bool)
    if cfg.fisher_tau is not None:
        keep &= kl < cfg.fisher_tau
    if cfg.hessian_tau is not None:
        keep &= jnp.abs(update) < cfg.hessian_tau
    return keep


def advantages(rollout, cfg: Config, state):
    """GRPO's group z-score (ε = 1e-4) on each row's tokens."""
    return ops.group_advantage(rollout, scale=cfg.scale_rewards, eps=cfg.std_eps), state


def loss(stats, rollout, adv, cfg: Config, state):
    """GRPO's clipped surrogate over the tokens CAPO keeps, each row averaged over its kept tokens."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    logp = jax.lax.stop_gradient(stats.logprobs)
    keep = keep_mask(logp, jax.lax.stop_gradient(stats.topk_logprobs), adv, cfg)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    pg, clipped = ops.clipped_surrogate(ratio, adv, *cfg.clip_bounds)
    # The mask shrinks each row's token count (the official per-row mean over
    # kept tokens); the whole-minibatch counts are frozen first, from every
    # trained token, so that a microbatch sees the same row and token totals.
    whole = rollout if rollout.normaliser is not None else rollout.with_normaliser()
    kept = whole.replace(loss_mask=rollout.loss_mask & keep)
    total, metrics = ops.regularised_policy_loss(
        pg, stats, kept, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    metrics["capo_masked_frac"] = ops.masked_mean((~keep).astype(jnp.float32), ops.weighted_mask(rollout))
    return total, metrics | ops.ratio_metrics(ratio, clipped, rollout)


register(Algorithm(
    name="capo",
    family="policy-loss",
    paper="Stabilizing Policy Gradients for Sample-Efficient Reinforcement Learning in LLM Reasoning (Melo et al., 2025, arXiv:2510.00819)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    needs=frozenset({"topk_logprobs"}),
    topk=4,
    estimator_fields=("scale_rewards", "std_eps"),
))
