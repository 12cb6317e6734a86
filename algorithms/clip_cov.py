"""Clip-Cov: PPO/GRPO with the gradient of a few high-covariance tokens removed.

Paper: Cui et al., "The Entropy Mechanism of Reinforcement Learning for
Reasoning Language Models", 2025, arXiv:2505.22617 (section 5).

Under (natural) policy gradient the entropy change is ≈ −η·Cov(log π, A),
driven by tokens whose centred log-prob and advantage move together. With
the batch-centred per-token covariance (log-probs without gradient)

    c_t = (Â_t − mean Â)(log π_θ(y_t) − mean log π_θ)        (means over trained tokens)

Clip-Cov takes the tokens that PPO's clip leaves active and whose c_t lies
in (ω_low, ω_high), draws k = max(⌊r·N⌋, 1) of them at random (N = trained
tokens in the batch, r = `clip_cov_ratio`), and drops their loss term (and so
their gradient). All other tokens keep GRPO's clipped surrogate
−min(ρÂ, clip(ρ, 1 − ε, 1 + ε_h)Â). With r = 0 nothing is dropped and the
loss is GRPO's (kl_coef = 0).

Randomness without a key: each token's draw is `ops.token_uniform(seed, ·)`,
a hash of (seed, token id, position, behaviour log-prob); the k candidates
with the largest draws are dropped. The seed is the algorithm state, a
counter advanced once per batch in `advantages` (starting at `Config.seed`),
so selections differ across steps, agree between jit, eager and sharded
runs, and follow their tokens under row permutations.

Batch coupling: the centring means, N and the top-k draw are whole-batch
quantities (verl computes them per micro-batch), so the `microbatch`
invariant does not hold.

Equivalent: verl `loss_mode=clip_cov` (`clip_cov_ratio`, `clip_cov_lb`,
`clip_cov_ub`). Verified against verl verl/trainer/ppo/core_algos.py
`compute_policy_loss_clip_cov` (copies in lime-RL/DCPO and horizon-llm/CTPO)
and PEERS.md; defaults r = 2e-4, ω = (1, 5) are verl's. Deviations: r = 0
drops no token (verl requires r > 0 and always drops at least one), and the
random draw is a content hash instead of torch.randperm.

Cost: about 2-2.4x GRPO's loss-and-gradient time (benchmarks/results/loss_speed.json):
the random draw hashes every token and the covariance band selection ranks the
whole minibatch's tokens; small next to the policy forward pass.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.PolicyLoss, pieces.GroupStd):
    clip_cov_ratio: float = pieces.setting(2e-4, ge=0.0, le=1.0)
    """r: fraction of the batch's trained tokens whose gradient is dropped (0: GRPO)."""
    cov_low: float = 1.0
    """ω_low: candidates have covariance c_t > ω_low."""
    cov_high: float = 5.0
    """ω_high: candidates have covariance c_t < ω_high."""
    seed: int = pieces.setting(0, ge=0, lt=2**32)
    """Initial value of the per-batch counter that seeds the random draw."""


def init_state(cfg: Config):
    """The random-draw counter (uint32)."""
    return jnp.asarray(cfg.seed, jnp.uint32)


def advantages(rollout, cfg: Config, state):
    """GRPO's group z-score; advances the draw counter."""
    return ops.group_advantage(rollout, eps=cfg.std_eps), state + jnp.uint32(1)


def loss(stats, rollout, adv, cfg: Config, state):
    """GRPO's clipped surrogate with k random high-covariance tokens dropped."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    pg, clipped = ops.clipped_surrogate(ratio, adv, *cfg.clip_bounds)
    valid = ops.weighted_mask(rollout) > 0
    cov = ops.token_covariance(adv, stats.logprobs, valid)
    candidates = valid & ~clipped & (cov > cfg.cov_low) & (cov < cfg.cov_high)
    k = ops.fraction_count(valid, cfg.clip_cov_ratio)
    dropped = ops.top_count_mask(ops.token_uniform(state, rollout), candidates, k)
    pg = jnp.where(dropped, 0.0, pg)
    total, metrics = ops.regularised_policy_loss(
        pg, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    metrics["cov_drop_frac"] = ops.masked_mean(dropped.astype(jnp.float32), valid)
    metrics["cov_mean"] = ops.masked_mean(cov, valid)
    return total, metrics | ops.ratio_metrics(ratio, clipped, rollout)


register(Algorithm(
    name="clip_cov",
    family="policy-loss",
    paper="The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models (Cui et al., 2025, arXiv:2505.22617)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    init_state=init_state,
    estimator_fields=("std_eps",),
    exemptions={
        "microbatch": "tokens are drawn from the whole minibatch (covariance centred on batch means, "
                      "k = ratio × the batch's token count), so a microbatch drops different tokens",
    },
))
