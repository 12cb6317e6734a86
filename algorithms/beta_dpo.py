"""β-DPO: Direct Preference Optimization with a batch-adaptive β and
β-guided data filtering.

Paper: Wu, Xie, Yang, Wu, Gao, Ding, Wang, He, "β-DPO: Direct Preference
Optimization with Dynamic β", NeurIPS 2024, arXiv:2407.08639 (section 4,
eqs. 8–10).

With the individual reward discrepancy of a pair M_i = h(y_w) − h(y_l),
h = Σ_t log π − log π_ref (the DPO margin, no gradient), β-DPO keeps running
estimates M₀ (mean) and σ (std) of M over batches,

    M₀ ← m M₀ + (1 − m) mean_batch(M),   σ ← m σ + (1 − m) std_batch(M)

then (1) filters: samples ⌊(1 − ρ) N⌋ of the batch's N pairs without
replacement with probabilities ∝ exp(−½((M_i − M₀)/σ)²) (pairs whose
discrepancy is an outlier are likely dropped), and (2) sets one β for the
batch from the kept pairs,

    β_batch = max(β₀ (1 + a (mean_kept(M) − M₀)), 10⁻³)

and trains the DPO loss −log σ(β_batch Δ) averaged over the kept pairs.
a = 0 and ρ = 0 is DPO.

Implementation notes (deliberate, for exact gradient accumulation):
- M is computed in `advantages`, once per minibatch, from
  `behaviour_logprobs` — the policy at the start of the step, which is the
  current policy at the step's first gradient evaluation (the official code
  takes the detached current log-probs of each microbatch; offline data must
  carry the current policy's log-probs there, as PPO-style trainers do). The
  statistics, the filter and β_batch are then fixed for all microbatches of
  the minibatch, so accumulation is exact and no invariant is exempted.
- The state carries (M₀, σ, step, β_batch, 1/kept-fraction); the loss reads
  β_batch and the scale from it and the kept flag of each pair from the
  targets' `row_targets` (the flag on both rows of the pair).
- Sampling without replacement uses the Gumbel-top-k trick with per-pair
  uniforms from `ops.pair_uniform` (a hash of the pair's tokens and the step),
  so the draw does not depend on row order, device layout or jit.
Defaults from the official README (β₀ = 0.1, ρ = 0.2, a = 0.6) and
trainer (m = 0.9, β floor 10⁻³). Verified against junkangwu/beta-DPO
`trainers.py` (`preference_loss` mode `beta_DPO`, `update_and_sync_tensor_mean`)
and `README.md`.
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
    """β₀: the base inverse temperature."""
    alpha: float = 0.6
    """a: sensitivity of β_batch to the kept pairs' mean discrepancy (the README's `a`)."""
    filter_ratio: float = pieces.setting(0.2, ge=0.0, lt=1.0)
    """ρ ∈ [0, 1): fraction of each batch's pairs dropped by the β-guided filter."""
    momentum: float = pieces.setting(0.9, ge=0.0, le=1.0)
    """m: momentum of the running mean and std of the discrepancy."""
    beta_min: float = pieces.setting(1e-3, gt=0.0)
    """Floor on β_batch (official clamp)."""
    seed: int = 0
    """Seed of the filter's sampling (combined with the step count)."""


def init_state(cfg: Config):
    """Running discrepancy mean/std at 0 (as in the official trainer), β_batch = β₀."""
    zero = jnp.zeros((), jnp.float32)
    return {"gap_mean": zero, "gap_std": zero, "step": jnp.zeros((), jnp.int32),
            "beta": jnp.asarray(cfg.beta, jnp.float32), "scale": jnp.ones((), jnp.float32)}


def _top_k(score, valid, k: int):
    """[G] bool: the k highest scores among `valid` pairs (Gumbel-top-k = sampling
    k without replacement); undecided valid pairs (score −10³⁰) come after
    the decided ones and before the invalid ones."""
    order = jnp.argsort(-jnp.where(valid, score, -jnp.inf), stable=True)
    rank = jnp.zeros(score.shape, jnp.int32).at[order].set(jnp.arange(score.shape[0], dtype=jnp.int32))
    return (rank < k) & valid


def advantages(rollout, cfg: Config, state):
    """Update the running statistics, draw the filter and set β_batch.

    Targets: "advantages" is the preference sign on kept pairs' tokens, 0 on
    dropped ones (what the trainer logs); "row_targets" [B] is each pair's kept
    flag on both its rows (0 also for a tie or a pair with no trained token)."""
    sign, weight = ops.pair_preference(rollout)
    chosen, rejected = ops.split_pairs(ops.sequence_scores(rollout.behaviour_logprobs, rollout), sign)
    gap = jax.lax.stop_gradient(chosen - rejected)
    decided = weight > 0
    count = jnp.sum(decided)
    mean = jnp.sum(jnp.where(decided, gap, 0.0)) / jnp.maximum(count, 1)
    var = jnp.sum(jnp.where(decided, jnp.square(gap - mean), 0.0)) / jnp.maximum(count - 1, 1)
    m = cfg.momentum
    gap_mean = jnp.where(count > 0, m * state["gap_mean"] + (1 - m) * mean, state["gap_mean"])
    gap_std = jnp.where(count > 0, m * state["gap_std"] + (1 - m) * jnp.sqrt(var), state["gap_std"])

    kept = jnp.min(ops.group_view(rollout.sample_weight, 2), axis=1) > 0
    log_weight = -0.5 * jnp.square((gap - gap_mean) / jnp.maximum(gap_std, 1e-6))
    u = jnp.clip(ops.pair_uniform(cfg.seed + state["step"], rollout), 1e-7, 1.0 - 1e-7)
    score = jnp.where(decided, log_weight - jnp.log(-jnp.log(u)), -1e30)
    select = _top_k(score, kept, max(1, int(rollout.num_groups * (1.0 - cfg.filter_ratio))))

    used = select & decided
    gap_used = jnp.sum(jnp.where(used, gap, 0.0)) / jnp.maximum(jnp.sum(used), 1)
    beta = jnp.where(jnp.any(used), cfg.beta * (1.0 + cfg.alpha * (gap_used - gap_mean)), cfg.beta)
    beta = jnp.maximum(beta, cfg.beta_min)
    n_rows = jnp.sum(rollout.sample_weight) if rollout.normaliser is None else rollout.normaliser.rows
    scale = (n_rows / 2.0) / jnp.maximum(jnp.sum(select), 1)
    new_state = {"gap_mean": gap_mean, "gap_std": gap_std, "step": state["step"] + 1,
                 "beta": beta.astype(jnp.float32), "scale": scale.astype(jnp.float32)}
    trained = jnp.any(ops.group_view(jnp.any(rollout.loss_mask, axis=1), 2), axis=1)
    keep = jnp.where(used & trained, 1.0, 0.0)
    targets = {"advantages": ops.pair_advantage(select.astype(jnp.float32), sign, rollout),
               "row_targets": jnp.repeat(keep, 2)}
    return targets, new_state


def loss(stats, rollout, targets, cfg: Config, state):
    """Mean over the kept pairs of −log σ(β_batch Δ)."""
    scores = ops.pair_scores(stats, rollout)
    keep = ops.group_view(targets["row_targets"], 2)[:, 0]
    per_pair = keep * state["scale"] * ops.logistic_pair_loss(state["beta"] * scores.margin)
    decided = jnp.maximum(jnp.sum(scores.weight), 1.0)
    extra = {"beta_batch": state["beta"], "kept_fraction": jnp.sum(keep * scores.weight) / decided}
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta, extra)


register(Algorithm(
    name="beta_dpo",
    family="preference",
    paper="β-DPO: Direct Preference Optimization with Dynamic β (Wu et al., 2024, arXiv:2407.08639)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    plain_advantage=False,
    init_state=init_state,
    needs=frozenset({"ref_logprobs"}),
    pairwise=True,
    prepare=pair_groups,
))
