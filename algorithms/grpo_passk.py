"""GRPO pass@k: leave-one-out advantage for the max-of-K (pass@k) objective.

Paper: Tang, Zheng, Synnaeve and Munos, "Optimizing Language Models for
Inference Time Objectives using Reinforcement Learning", 2025,
arXiv:2503.19595 (ICML 2025). This is the paper verl's `grpo_passk`
estimator cites ("Implemented as described in
https://arxiv.org/abs/2503.19595"), not "Pass@k Training for Adaptively
Balancing Exploration and Exploitation" (arXiv:2508.10751).

With K samples per prompt the objective is the expected best reward of the
group, E[max_j R_j] (pass@K for 0/1 rewards). Its score-function gradient
Σ_i max_j R_j ∇log π(y_i) can use, for sample i, any baseline that does not
depend on y_i; the leave-one-out choice is the best reward of the others:

    Â_i = max_j R_j − max_{j≠i} R_j

which is r_max − r_2nd for the single best sample and 0 for every other one.
verl optionally divides by the group std (+ ε), as GRPO does
(`norm_adv_by_std_in_grpo`, default on). The policy loss is GRPO's token-ratio
clipped surrogate with verl's defaults (ε = 0.2, token-mean, no KL), so this
file is the estimator only: `get_algorithm("grpo_passk")` pairs it with
`grpo`'s loss at `kl_coef` = 0 and aggregation token-mean.

Ties are permutation-invariant by construction: if two or more samples share
the best reward, max_{j≠i} R_j = max_j R_j for every i and all advantages are
0 (verl's `torch.topk` picks one of the tied rows but gives it r_max − r_2nd =
0, so the outputs agree). No arbitrary tie-breaking is needed. K = 1 has no
leave-one-out baseline and is rejected, as in verl.

Closest relative: GRPO / RLOO (mean instead of max). The paper's biased,
lower-variance "centred" variant is not implemented here [inferred: verl
implements only the unbiased form, which is what this file follows].

Equivalents: verl `adv_estimator=grpo_passk`. No TRL equivalent.

Verified against: verl `verl/trainer/ppo/core_algos.py::
compute_grpo_passk_outcome_advantage`; the leave-one-out form from the
paper's abstract and summaries (leave-one-out control variate for k-sample
objectives) [the paper's full text was not available to check equation numbers].
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.GroupStd):
    norm_by_std: bool = True
    """Divide by the group std of the rewards (+ std_eps), verl's `norm_adv_by_std_in_grpo`."""
    std_ddof: int = pieces.setting(1, ge=0)
    """Delta degrees of freedom of the group std (torch.std default: 1)."""


def advantages(rollout, cfg: Config, state):
    """Â_i = max_j R_j − max_{j≠i} R_j (÷ group std), on the trained tokens."""
    k = rollout.group_size
    if k < 2:
        raise ValueError(f"grpo_passk needs at least 2 samples per group, got group_size={k}")
    rewards = ops.group_view(rollout.rewards, k)
    others = jnp.where(jnp.eye(k, dtype=bool)[None], -jnp.inf, rewards[:, None, :])
    adv = (jnp.max(rewards, axis=1, keepdims=True) - jnp.max(others, axis=2)).reshape(-1)
    if cfg.norm_by_std:
        adv = adv / (ops.group_std(rollout.rewards, k, cfg.std_ddof) + cfg.std_eps)
    return ops.broadcast_to_tokens(adv, rollout), state


register(Algorithm(
    name="grpo_passk",
    family="advantage",
    paper="Optimizing Language Models for Inference Time Objectives using Reinforcement Learning (Tang et al., 2025, arXiv:2503.19595)",
    Config=Config,
    advantages=advantages,
    loss=None,
    default_loss="grpo",
    loss_defaults={"kl_coef": 0.0, "aggregation": "token-mean"},
))
