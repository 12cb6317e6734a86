"""OPO: On-Policy RL with Optimal reward baseline.

Paper: Hao et al., "On-Policy RL with Optimal Reward Baseline", 2025,
arXiv:2505.23585 (Microsoft Research).

Two changes to group-baseline policy gradient. (1) Exact on-policy training:
one gradient step per batch of samples, so π_old = π_θ and no ratio, clipping
or KL term is needed. (2) The variance-minimising baseline. For the score
function g_i = Σ_t ∇log π_θ(y_{i,t}) the optimal constant baseline is
b* = E[‖g‖² R] / E[‖g‖²]; assuming ‖g_i‖² grows in proportion to the
response length L_i, the group estimate is the length-weighted mean reward:

    b    = Σ_{j∈g} L_j R_j / Σ_{j∈g} L_j
    Â_i  = R_i − b
    L(θ) = −1/Σ_i L_i Σ_i Σ_t Â_i log π_θ(y_{i,t})

Here L_i = Σ_t loss_mask[i, t] (trained tokens); a group with no trained
token falls back to the plain mean. Aggregation: token-mean, which differs
from the per-response token sum (seq-mean-token-sum, the g_i above) only by
a batch constant, so the optimal-baseline derivation holds for both; the
official code (verl v0.2.0) averages over tokens. The loss is plain
REINFORCE, so this file is the estimator only: `get_algorithm("opo")` pairs it
with `reinforce`'s loss at aggregation token-mean (`kl_coef` = 0 and
`entropy_coef` = 0: OPO uses neither).

Closest relative: REINFORCE with the group-mean baseline (`reinforce`);
with equal response lengths in a group, b is the group mean and OPO is
exactly that.

Equivalents: verl `adv_estimator=opo` (run strictly on-policy). No TRL
equivalent.

Verified against: the authors' code, microsoft/LMOps `opo/README.md` (built
on verl v0.2.0; exact on-policy = train_batch_size equal to
ppo_mini_batch_size, KL and entropy coefficients 0) and
`opo/verl/trainer/ppo/core_algos.py::compute_opo_outcome_advantage`
(value_baseline "optimal": b = Σ_j L_j R_j / Σ_j L_j per group with
L = response-mask sum, Â = R − b, no std division); the loss of verl v0.2.0,
`compute_policy_loss`, is `masked_mean` of the per-token loss over the
response mask, i.e. token-mean; upstream verl
`compute_opo_outcome_advantage` is the same baseline.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.ConfigBase):
    """OPO's baseline has no settings: L_i is the trained-token count of row i."""


def advantages(rollout, cfg: Config, state):
    """Â_i = R_i − Σ_j L_j R_j / Σ_j L_j over the group of row i."""
    k = rollout.group_size
    lengths = ops.group_view(jnp.sum(rollout.loss_mask, axis=1).astype(jnp.float32), k)
    rewards = ops.group_view(rollout.rewards, k)
    total = jnp.sum(lengths, axis=1, keepdims=True)
    weighted = jnp.sum(lengths * rewards, axis=1, keepdims=True) / jnp.where(total > 0, total, 1.0)
    baseline = jnp.where(total > 0, weighted, jnp.mean(rewards, axis=1, keepdims=True))
    adv = (rewards - baseline).reshape(-1)
    return ops.broadcast_to_tokens(adv, rollout), state


register(Algorithm(
    name="opo",
    family="advantage",
    paper="On-Policy RL with Optimal Reward Baseline (Hao et al., 2025, arXiv:2505.23585)",
    Config=Config,
    advantages=advantages,
    loss=None,
    default_loss="reinforce",
    loss_defaults={"aggregation": "token-mean"},
))
