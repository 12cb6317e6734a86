"""XRPO: eXplore–eXploit GRPO (the advantage-sharpening part).

Paper: Udbhav Bamba, Minghao Fang, Yifan Yu, Haizhong Zheng and Fan Lai,
"XRPO: Pushing the limits of GRPO with Targeted Exploration and
Exploitation", 2025, arXiv:2510.06672. Code (announced):
https://github.com/UIUC-MLSys/XRPO.

XRPO has three parts: a rollout allocator that gives more samples to prompts
whose mean-reward estimate would shrink most (exploration), in-context
seeding for prompts with zero reward, and novelty-aware advantage sharpening
(exploitation). Only the last is a change to the loss, and only it is
implemented here; the allocator and the seeding belong in the sampler.

Sharpening [inferred]: a correct response the policy found unlikely
relative to the rest of its group gets a bonus on top of GRPO's advantage,

    s_i   = (1/|y_i|) Σ_t log π_old(y_{i,t} | x, y_{i,<t})       length-normalised sequence log-likelihood
    η_i   = exp(s_i − mean_g s)                                    relative likelihood; novelty = 1 − η_i
    A⁺_i  = A_i + 1[A_i > 0] · min(max(λ (1 − η_i), 0), κ A_i)    A_i = GRPO's group z-score

so the bonus is ≥ 0, only touches responses with A_i > 0 (better than the
group mean; the correct ones for binary rewards), grows with novelty, and is
capped at κ A_i, so A⁺_i ≤ (1 + κ) A_i. The likelihood is the sampling
policy's (behaviour log-probs), so the advantage stays outside the gradient.
mean_g s averages over the group's rows that have trained tokens.

What is inferred: the paper's text (available here only as its abstract,
"a group-relative, novelty-aware advantage sharpening mechanism that
leverages sequence likelihoods to amplify low-probability yet correct
responses") fixes the ingredients; the formula above is the one given in
third-party re-implementations (e.g. `Wodlfvllf/grpo-composer`,
`novelty_sharpening.py`), restricted to A_i > 0 as the paper's wording and
the catalogue invariant require, and the defaults λ = κ = 1 are from there,
not from the paper. That file (grpo_composer/core/advantages/
novelty_sharpening.py) itself differs in two details: it caps the bonus at
κ|A_i| and adds it to every row (negative advantages too), and it leaves to
the caller which policy's log-probs feed s_i. The loss settings (ε = 0.2, no KL,
token mean) are verl's defaults [inferred]; the loss is GRPO's clipped
surrogate, so this file is the estimator only and `get_algorithm("xrpo")`
pairs it with `grpo`'s loss at `kl_coef` = 0 and aggregation token-mean.
Searched and not found: the method section (arxiv.org/html/2510.06672 v1
and v3 and the summaries on themoonlight.io, chatpaper, arxivlens and
scholarfeed expose the abstract and, at most, the allocator's confidence
interval h_q(n_q) = t_{1−α/2, n_q−1} s_q/√n_q, not the sharpening rule or
its λ, κ) and the official code (github.com/UIUC-MLSys/XRPO, announced in
the v3 abstract, is not in the code index).

Invariants: λ = 0 or κ = 0 gives GRPO exactly (tested, loss and gradient);
the sign of every advantage is kept; the bonus is monotone non-decreasing in
novelty; all-equal groups stay at 0. Sharpening breaks zero mean per group
(it only adds to positive advantages).

Closest relative: GRPO. Equivalents: none in TRL or verl.

Verified against: the abstract only (arXiv:2510.06672 v1/v3: a group-relative
sharpening that uses sequence likelihoods to amplify low-probability yet
correct responses); the formula and λ, κ remain [inferred].
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.GroupStd):
    novelty_coef: float = pieces.setting(1.0, ge=0.0)
    """λ: scale of the novelty bonus λ(1 − η) [inferred default]."""
    bonus_cap: float = pieces.setting(1.0, ge=0.0)
    """κ: the bonus is at most κ·A_i [inferred default]."""


def sharpen(adv, rollout, cfg: Config):
    """[B]: A + 1[A > 0]·min(max(λ(1 − η), 0), κA) with η the relative sequence likelihood."""
    scores = ops.sequence_mean(rollout.behaviour_logprobs, rollout.loss_mask)
    has_tokens = jnp.any(rollout.loss_mask, axis=1)
    # η is capped at 1 before exp overflows: η > 1 gives no bonus either way (max(·, 0)).
    relative = jnp.exp(jnp.minimum(scores - ops.group_masked_mean(scores, has_tokens, rollout.group_size), 0.0))
    bonus = jnp.minimum(cfg.novelty_coef * (1.0 - relative), cfg.bonus_cap * adv)
    return adv + jnp.where((adv > 0) & has_tokens, bonus, 0.0)


def advantages(rollout, cfg: Config, state):
    """GRPO's z-score, sharpened on positive-advantage responses by their novelty."""
    adv = ops.group_zscore(rollout.rewards, rollout.group_size, cfg.std_eps)
    return ops.broadcast_to_tokens(sharpen(adv, rollout, cfg), rollout), state


register(Algorithm(
    name="xrpo",
    family="advantage",
    paper="XRPO: Pushing the limits of GRPO with Targeted Exploration and Exploitation (Bamba et al., 2025, arXiv:2510.06672)",
    Config=Config,
    advantages=advantages,
    loss=None,
    default_loss="grpo",
    loss_defaults={"kl_coef": 0.0, "aggregation": "token-mean"},
))
