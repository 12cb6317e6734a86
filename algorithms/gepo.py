"""GEPO: Group Equivalent Preference Optimization (set-wise).

Paper: Wu, Ming, Gao, Zhao, Chen, Yang, Zheng, He, Yu, "On-Policy
Optimization with Group Equivalent Preference for Multi-Programming Language
Understanding", 2025, arXiv:2505.12723 (section 3.2, eqs. 6–9).

Each prompt has a group of responses split into winners Y_w (n responses
equivalent to the source, e.g. IRs at different compiler optimisation
levels) and losers Y_l (m inequivalent ones). With the implicit reward
r̂_θ(y) = β log π_θ(y)/π_ref(y) (sequence log-ratio over trained tokens),
GEPO compares the *average* rewards of the two sets and, through a Lagrange
multiplier on a variance constraint, pulls the winners' rewards together:

    L = −log σ( mean_{y∈Y_w} r̂_θ(y) − mean_{y∈Y_l} r̂_θ(y) ) + λ Var_{y∈Y_w} r̂_θ(y)

(the partition function β log Z(x) cancels in both terms). With one winner
and one loser GEPO is DPO; the loss is invariant to permuting responses
within a set.

Set-wise, not pairwise: a group is the K rows of one prompt
(group_size = K ≥ 2, any K), winners are rows whose reward exceeds
`threshold` (the equivalence label: 1 equivalent, 0 not), losers the rest.
A group without a winner or without a loser contributes no preference term;
the variance term uses the kept winners (population variance, 0 for one
winner). Rows with sample_weight 0 are left out; averages over the
minibatch's groups. So the record is not `pairwise` (the trainer must not cut
the groups into pairs).

Defaults: λ = 1 (section 3.2), β = 0.1 [inferred: the paper does not state
β; DPO's default]; the placement of β inside the variance (variance of the
implicit reward, i.e. β² times that of the log-ratio) follows the
substitution r_φ = β log π_θ/π_ref + β log Z into the constraint of eq. 6
[inferred: the equations are not in the extracted text]. OORL adds this loss
with weight 0.01 to an on-policy RL loss; that mixing is the trainer's job.
Verified against the paper text (arXiv:2505.12723v1, section 3.2).
Both [inferred] items stay open: the equations of section 3.2 and a β value
were searched for again (arXiv HTML v1, NeurIPS 2025 listings, paper
summaries, GitHub code search for an OORL / GEPO implementation) and only the
abstract came back; no official code was found.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.ConfigBase):
    beta: float = pieces.setting(0.1, gt=0.0)
    """β: inverse temperature of the implicit reward β log π_θ/π_ref."""
    lam: float = pieces.setting(1.0, ge=0.0)
    """λ: weight of the winner-reward variance (equivalence) penalty (paper: 1)."""
    threshold: float = 0.5
    """Rows with reward > threshold are winners (equivalent), the others losers."""


def winners(rollout, cfg: Config):
    """([G, K] winner weights, [G, K] loser weights): sample weights split by the equivalence label."""
    weight = ops.group_view(rollout.sample_weight.astype(jnp.float32), rollout.group_size)
    win = ops.group_view(rollout.rewards, rollout.group_size) > cfg.threshold
    return jnp.where(win, weight, 0.0), jnp.where(win, 0.0, weight)


def advantages(rollout, cfg: Config, state):
    """+1 on winner rows and −1 on loser rows of groups that have both, 0 elsewhere."""
    win, lose = winners(rollout, cfg)
    mixed = (jnp.sum(win, axis=1, keepdims=True) > 0) & (jnp.sum(lose, axis=1, keepdims=True) > 0)
    sign = jnp.where(mixed, jnp.sign(win) - jnp.sign(lose), 0.0).reshape(-1)
    return ops.broadcast_to_tokens(sign, rollout), state


def _weighted_mean(x, w):
    return jnp.sum(w * x, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1e-8)


def loss(stats, rollout, adv, cfg: Config, state):
    """Mean over groups of −log σ(mean_w r̂ − mean_l r̂) + λ Var_w r̂."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    win, lose = winners(rollout, cfg)
    reward = cfg.beta * ops.group_view(ops.sequence_scores(stats.logprobs, rollout), rollout.group_size)
    mean_win, mean_lose = _weighted_mean(reward, win), _weighted_mean(reward, lose)
    has_win, has_lose = jnp.sum(win, axis=1) > 0, jnp.sum(lose, axis=1) > 0
    mixed = has_win & has_lose
    preference = jnp.where(mixed, ops.logistic_pair_loss(mean_win - mean_lose), 0.0)
    variance = _weighted_mean(jnp.square(reward - mean_win[:, None]), win)
    kept = ops.group_view(rollout.sample_weight.astype(jnp.float32), rollout.group_size)
    group_weight = jnp.max(kept, axis=1)
    per_group = preference + cfg.lam * variance
    total = ops.aggregate_groups(per_group, group_weight, rollout)
    frozen = jax.lax.stop_gradient
    n_mixed = jnp.maximum(jnp.sum(mixed), 1.0)
    metrics = {
        "pref_loss": total,
        "preference_term": ops.aggregate_groups(preference, group_weight, rollout),
        "winner_variance": frozen(ops.aggregate_groups(variance, group_weight, rollout)),
        "reward_margin": frozen(jnp.sum(jnp.where(mixed, mean_win - mean_lose, 0.0)) / n_mixed),
        "reward_accuracy": frozen(jnp.sum(mixed & (mean_win > mean_lose)) / n_mixed),
    }
    mask = ops.weighted_mask(rollout)
    metrics["kl"] = ops.masked_mean(frozen(ops.kl_estimate(stats.logprobs, rollout.ref_logprobs, "k3")), mask)
    if stats.entropy is not None:
        metrics["entropy"] = ops.masked_mean(frozen(stats.entropy), mask)
    return total, metrics


register(Algorithm(
    name="gepo",
    family="preference",
    paper="On-Policy Optimization with Group Equivalent Preference for Multi-Programming Language Understanding (Wu et al., 2025, arXiv:2505.12723)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    needs=frozenset({"ref_logprobs"}),
    metric_reductions={"preference_term": "sum", "winner_variance": "sum"},
))
