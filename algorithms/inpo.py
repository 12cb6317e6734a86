"""INPO: Iterative Nash Policy Optimization.

Paper: Zhang, Yu, Peng, Song, Tian, Huo, Jiang, Mi and Yu, "Iterative Nash
Policy Optimization: Aligning LLMs with General Preferences via No-Regret
Learning", ICLR 2025, arXiv:2407.00617.

The policy plays against itself with online mirror descent on the
KL-regularised preference game; each iteration's target is the geometric
mixture π_{t+1} ∝ π_ref^{τ/η} π_t^{1 − τ/η} exp(P(y ≻ π_t)/η), reached without
estimating any win rate by a squared loss on preference pairs (y_w ≻ y_l)
sampled from π_t. With sequence log-probs over trained tokens and
h_π(y, y') = log π(y) − log π(y'),

    ℓ = (h_θ(y_w, y_l) − (τ/η) h_ref(y_w, y_l) − (1 − τ/η) h_t(y_w, y_l) − 1/(2η))²

averaged over decided pairs (ties carry no preference). τ is the KL
regularisation toward π_ref, 1/η the mirror-descent step size. π_t is the iterate
that sampled the pairs, so h_t comes from `Rollout.behaviour_logprobs`;
π_ref from `Rollout.ref_logprobs`. The preference label is the order of the
rows' rewards (a preference oracle's verdict in {1, 0} as reward works).
With a group of K > 2 rows every decided pair is used.

At π_t = π_ref the mixture is π_ref and the loss is IPO's,
(h_θ − h_ref − 1/(2η))², with IPO's τ equal to η (the tests compute IPO's
closed form); with τ = η (ratio 1) it is IPO at every iteration. The
minimiser puts the pair margin relative to the mixed reference at 1/(2η).

Equivalents: TRL `DPOTrainer(loss_type="ipo")` only at π_t = π_ref (and TRL
length-normalises IPO's log-probs; this file, like the IPO paper, sums).
Sources: the loss follows the paper's per-iteration objective as recorded
in ALGORITHMS.md #74; the same expression (ratio = τ/η) appears in a
third-party reimplementation, github.com/XuHuang441/SimPO_slurm
inpo_scripts/inpo_trainer.py, whose config (inpo_config.py) gives the
defaults used here, τ/η = 1/3 and η = 0.0075 [inferred: the paper's own
code and hyper-parameter table were not available to check].
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
    eta: float = pieces.setting(0.0075, gt=0.0)
    """η: inverse mirror-descent step size; the target margin is 1/(2η) [inferred default]."""
    tau: float = pieces.setting(0.0025, ge=0.0)
    """τ: KL regularisation toward π_ref; π_ref's weight in the mixture is τ/η (1/3 by
    default; 0 drops π_ref) [inferred default]."""


def advantages(rollout, cfg: Config, state):
    """{"advantages": the rewards centred within the group, on each row's
    tokens (what the trainer logs), "row_targets": [B] the same per row (0
    for a row with no trained token)}; only their order within a pair is read."""
    centred = ops.broadcast_to_tokens(ops.group_centre(rollout.rewards, rollout.group_size), rollout)
    return {"advantages": centred, "row_targets": ops.row_values(centred, rollout)}, state


def loss(stats, rollout, targets, cfg: Config, state):
    """Mean over decided pairs of (margin of log π_θ over the mixed reference − 1/(2η))²."""
    stats, rollout, _ = ops.loss_inputs(stats, rollout)
    mix = cfg.tau / cfg.eta
    anchor = rollout.behaviour_logprobs
    if mix:
        anchor = mix * rollout.ref_logprobs + (1.0 - mix) * anchor
    log_ratio = ops.sequence_sum(stats.logprobs - anchor, rollout.loss_mask)
    sign = jnp.sign(ops.group_pair_differences(targets["row_targets"], rollout.group_size))
    margin = sign * ops.group_pair_differences(log_ratio, rollout.group_size)
    weight = jnp.where(sign != 0, ops.group_pair_weight(rollout), 0.0)
    total = ops.aggregate_group_pairs(jnp.square(margin - 0.5 / cfg.eta), weight, rollout)
    decided = jnp.maximum(jnp.sum(weight), 1e-8)
    metrics = {
        "pg_loss": total,
        "margin": jnp.sum(weight * jax.lax.stop_gradient(margin)) / decided,
    }
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    return total, metrics | ops.ratio_metrics(ratio, None, rollout)


register(Algorithm(
    name="inpo",
    family="self-play",
    paper="Iterative Nash Policy Optimization: Aligning LLMs with General Preferences via No-Regret Learning (Zhang et al., 2024, arXiv:2407.00617)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    plain_advantage=False,
    needs=lambda cfg: frozenset({"ref_logprobs"} if cfg.tau else set()),
    pairwise=True,
    prepare=pair_groups,
))
