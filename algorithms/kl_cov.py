"""KL-Cov: importance-weighted policy gradient with a KL penalty on the
highest-covariance tokens.

Paper: Cui et al., "The Entropy Mechanism of Reinforcement Learning for
Reasoning Language Models", 2025, arXiv:2505.22617 (section 5).

With the batch-centred per-token covariance (log-probs without gradient)

    c_t = (Â_t − mean Â)(log π_θ(y_t) − mean log π_θ)        (means over trained tokens)

KL-Cov ranks all trained tokens of the batch by c_t and adds the penalty
κ·|log ρ_t| to the k = max(⌊r·N⌋, 1) largest (N = trained tokens, r =
`kl_cov_ratio`; exact ties, e.g. tokens of one response with the same
log-prob, are broken by a content hash, `ops.token_uniform`, so exactly k
are chosen whatever the row order); there is no ratio clipping:

    ℓ_t = −ρ_t Â_t + κ·|log ρ_t|·𝟙[t among the top k by c_t]

The penalty pulls the few tokens that drive entropy collapse back towards
the behaviour policy. With r = 0 the loss is the unclipped importance-
weighted surrogate −ρÂ, i.e. GRPO with ε → ∞ and `kl_coef` = 0 (κ, `kl_cov_coef`, is not
the KL-to-reference weight `kl_coef`).

Batch coupling: the centring means, N and the top-k ranking are whole-batch
quantities (verl computes them per micro-batch), so the `microbatch`
invariant does not hold.

Equivalent: verl `loss_mode=kl_cov` (`kl_cov_ratio`, `ppo_kl_coef`).
Verified against verl verl/trainer/ppo/core_algos.py
`compute_policy_loss_kl_cov` (copies in lime-RL/DCPO and horizon-llm/CTPO)
and PEERS.md; defaults r = 2e-4, κ = 1 are verl's. Deviation: r = 0 selects
no token (verl requires r > 0 and always selects at least one).

Cost: about 4.5-6x GRPO's loss-and-gradient time (benchmarks/results/loss_speed.json)
because choosing exactly the top-k tokens by covariance sorts every token of the
minibatch (O(N log N)) and hashes each token for tie-breaking; the policy
forward pass, which dominates a real update, is unchanged.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation, pieces.GroupStd):
    kl_cov_ratio: float = pieces.setting(2e-4, ge=0.0, le=1.0)
    """r: fraction of the batch's trained tokens that get the KL penalty (0: no penalty)."""
    kl_cov_coef: float = pieces.setting(1.0, ge=0.0)
    """κ: weight of |log ρ| on the selected tokens (verl's ppo_kl_coef)."""


def advantages(rollout, cfg: Config, state):
    """GRPO's group z-score."""
    return ops.group_advantage(rollout, eps=cfg.std_eps), state


def loss(stats, rollout, adv, cfg: Config, state):
    """−ρÂ on every token plus κ|log ρ| on the top-k covariance tokens."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    log_ratio = ops.log_ratio(stats.logprobs, rollout.behaviour_logprobs)
    ratio = jnp.exp(log_ratio)
    valid = ops.weighted_mask(rollout) > 0
    k = ops.fraction_count(valid, cfg.kl_cov_ratio)
    cov = ops.token_covariance(adv, stats.logprobs, valid)
    selected = ops.top_k_exact(cov, valid, k, ops.token_uniform(0, rollout))
    # |log ρ| as log ρ · sign(log ρ): its gradient at ρ = 1 is 0 (jnp.abs gives 1 there).
    penalty = log_ratio * jax.lax.stop_gradient(jnp.sign(log_ratio))
    pg = -ratio * adv + jnp.where(selected, cfg.kl_cov_coef * penalty, 0.0)
    total, metrics = ops.regularised_policy_loss(
        pg, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    metrics["kl_cov_frac"] = ops.masked_mean(selected.astype(jnp.float32), valid)
    metrics["abs_log_ratio"] = ops.masked_mean(jnp.abs(log_ratio), valid)
    metrics["cov_mean"] = ops.masked_mean(cov, valid)
    return total, metrics | ops.ratio_metrics(ratio, None, rollout)


register(Algorithm(
    name="kl_cov",
    family="policy-loss",
    paper="The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models (Cui et al., 2025, arXiv:2505.22617)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("std_eps",),
    exemptions={
        "microbatch": "the penalised tokens are the top r·N of the whole minibatch by a covariance "
                      "centred on batch means, so a microbatch selects different tokens",
    },
))
