"""ADORA: Advantage Dynamics via Online Rollout Adaptation.

Paper: Qingnan Ren, Shiting Huang, Zhen Fang et al., "ADORA: Training
Reasoning Models with Dynamic Advantage Estimation on Reinforcement
Learning", 2026, arXiv:2602.10019 (first released as a blog post and code,
March 2025: https://github.com/ShadeCloak/ADORA).

ADORA re-weights GRPO's advantages group by group. From each group's
rollouts it decides whether the prompt is currently a "temporarily
advantageous" sample (TAS) or a "temporarily disadvantageous" one (TDS), and
scales the advantages of TDS groups by λ:

    Â_i = w_g · (r_i − mean_g r) / (std_g r + ε_std),    w_g = 1 if g is TAS, λ if g is TDS

with the length-advantage criterion of the released LLM code (Logic-RL):

    P_g = {i : r_i > r_correct},  N_g = {i : r_i ≤ r_correct, |y_i| < L_thr}
    g is TAS  ⇔  max_{i∈P_g} |y_i| > mean_{j∈N_g} |y_j|

i.e. some correct response is longer than the average incorrect one, which
keeps long chains of thought that solve the problem learning at full
strength (an empty P_g counts as −∞ and an empty N_g as −∞, so a group with
no correct response is TDS and one with only correct responses is TAS).
λ = 0.1, ε = 0.2 clip, β = 0.001 k3 KL and token-mean aggregation come from
the released `ADORA/ADORA.sh` (its L_thr = 3900 exceeds the 2048-token
budget, so it never filters; the default here is no threshold).

The paper changes only the advantage: the loss is GRPO's clipped surrogate
plus β·KL, so this file is an estimator and `get_algorithm("adora")` pairs it
with `grpo`'s loss at the released settings (`kl_coef` = 0.001, aggregation
token-mean; GRPO's ε = 0.2, k3 KL and no dual clip are the script's).

Not implemented [inferred from the paper's summary only]: the paper's
"difficulty advantage" criterion and its modality-specific weights
(attenuating TDS for weak VLMs, amplifying TAS for strong LLMs). Amplification
is `weight_advantageous > 1`; the criterion here is the length one.
`correct_threshold` defaults to 0.5 for {0, 1} rewards; the released
Logic-RL script uses 1.01 on its [−3, 3] reward scale.

Invariants: re-weighting is by a positive factor per group, so each
advantage keeps its sign, groups keep zero mean, and all-equal groups stay
at 0. With weight 1 for both categories ADORA is GRPO exactly (tested,
loss and gradient). Response length |y| = Σ_t loss_mask.

Closest relative: GRPO. Equivalents: the official verl fork
(`Length_weight.length_weight=True`, `compute_grpo_outcome_advantage_ADORA`);
none in TRL or mainline verl.

Verified against: `ShadeCloak/ADORA` `ADORA/verl/trainer/ppo/core_algos.py`
(`compute_grpo_outcome_advantage_ASORA`, the length criterion and λ scaling),
`ADORA/README.md` (the weight function) and `ADORA/ADORA.sh` (settings).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.GroupStd):
    weight_disadvantageous: float = pieces.setting(0.1, ge=0.0)
    """λ: advantage weight of temporarily disadvantageous groups."""
    weight_advantageous: float = pieces.setting(1.0, ge=0.0)
    """Advantage weight of temporarily advantageous groups."""
    correct_threshold: float = 0.5
    """A response is correct when its reward exceeds this (1.01 in the Logic-RL script)."""
    max_length_threshold: int | None = pieces.setting(None, gt=0)
    """L_thr: incorrect responses this long or longer do not count (None: all count)."""


def advantageous_groups(rollout, cfg: Config):
    """[B] bool: the row's group is temporarily advantageous (length criterion)."""
    k = rollout.group_size
    lengths = jnp.sum(rollout.loss_mask, axis=1).astype(jnp.float32)
    pos = rollout.rewards > cfg.correct_threshold
    neg = ~pos
    if cfg.max_length_threshold is not None:
        neg = neg & (lengths < cfg.max_length_threshold)
    longest_correct = jnp.max(ops.group_view(jnp.where(pos, lengths, -jnp.inf), k), axis=1)
    any_neg = jnp.any(ops.group_view(neg, k), axis=1)
    mean_incorrect = jnp.where(any_neg, ops.group_view(ops.group_masked_mean(lengths, neg, k), k)[:, 0], -jnp.inf)
    return jnp.repeat(longest_correct > mean_incorrect, k)


def advantages(rollout, cfg: Config, state):
    """Â_i = w_g · GRPO z-score, w_g ∈ {weight_advantageous, weight_disadvantageous}."""
    weight = jnp.where(advantageous_groups(rollout, cfg), cfg.weight_advantageous, cfg.weight_disadvantageous)
    adv = weight * ops.group_zscore(rollout.rewards, rollout.group_size, cfg.std_eps)
    return ops.broadcast_to_tokens(adv, rollout), state


register(Algorithm(
    name="adora",
    family="advantage",
    paper="ADORA: Training Reasoning Models with Dynamic Advantage Estimation on Reinforcement Learning (Ren et al., 2026, arXiv:2602.10019)",
    Config=Config,
    advantages=advantages,
    loss=None,
    default_loss="grpo",
    loss_defaults={"kl_coef": 0.001, "aggregation": "token-mean"},
))
