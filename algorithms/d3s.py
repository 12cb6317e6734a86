"""D³S: Dynamic Dual-Level Down-Sampling (on GRPO).

Paper: Wang, Yang, Tian, Shi, Ma, Liu, Yao, Ding, "Learning More with Less:
A Dynamic Dual-Level Down-Sampling Framework for Efficient Policy
Optimization", 2025, arXiv:2509.22115 (ICLR 2026). The code is in the
paper's supplementary material and was not available; every rule below that
the abstract does not state is [inferred].

GRPO's learning signal is diluted by uninformative rollouts and tokens. D³S
keeps, on top of GRPO's advantages Â_i (group z-score):
1. sample level (intra-group, the paper's D³S-I): in each group the
   m = ⌈ρ_s K⌉ rollouts whose advantages have the largest variance Var(A)
   (which the paper links to a larger policy-gradient-norm bound);
2. token level: among the kept rows' trained tokens, the ⌈ρ_t N⌉ with the
   largest |Â_i| · H_{i,t} over the whole batch (uncertain and impactful
   tokens), with H the sampling-time entropy `Rollout.sample_entropy`;
3. a dynamic schedule: the keep ratios ρ_s, ρ_t rise linearly from
   `*_start` (aggressive) to `*_end` (relaxed) over `schedule_steps`
   batches, like a curriculum.
The loss is GRPO's clipped surrogate with its KL term (weight kl_coef).

[inferred] details. The maximum-variance subset of size m of K numbers
consists of the j largest and m − j smallest for some j, so it is found
exactly by scanning j = 0..m over the sorted group (ties broken by row
order). Down-sampling is applied as a selection of advantages: a dropped
row or token gets Â = 0, so it contributes no policy-gradient term while
the aggregation normaliser stays that of the full batch (a KL term, when
kl_coef > 0, still covers every trained token). The keep ratios and the schedule
length are not in the abstract: 0.5 → 1.0 over 100 batches here.
Searched and not found: the method section (arxiv.org/html/2509.22115v1,
the ICLR 2026 listing on mlanthology.org, and the summaries on arxivlens,
newx.sg, summarxiv and deeppaper expose only the abstract) and the code
(supplementary material only; no public repository in the code index).
arxivlens's generated summary mentions intra-group (D³S-I) and cross-group
sample-selection variants; which one is the paper's default, the subset
search, the ratios and the schedule shape are not stated in any source found.

Because selection happens in `advantages` (once per batch, outside the
gradient), splitting the batch into microbatches afterwards changes
nothing. State: the number of batches seen (int32), advanced by
`advantages`.

Reductions: with both keep ratios 1 D³S is GRPO with the same Config;
the kept subset's advantage variance is the largest among subsets of its
size; exactly ⌈ρ_t N⌉ tokens survive the token level (bar exact ties).

Equivalents: none in verl/TRL.

Verified against: the paper's abstract only (arXiv:2509.22115, ICLR 2026:
sample level keeps the rollout subset maximising Var(A); token level keeps
the tokens with the largest |A_{i,t}|·H_{i,t}; a schedule from aggressive to
relaxed down-sampling) and the catalogue entry (ALGORITHMS.md #2); the
selection rules above remain [inferred].

Cost: about 2.2-2.7x GRPO's loss-and-gradient time (benchmarks/results/loss_speed.json):
the maximum-variance subset search sorts each group and the token selection
ranks the batch's |A|·entropy scores; small next to the policy forward pass.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.PolicyLoss, pieces.GroupStd):
    sample_keep_start: float = pieces.setting(0.5, gt=0.0, le=1.0)
    """ρ_s at the first batch: fraction of each group's rollouts kept [inferred]."""
    sample_keep_end: float = pieces.setting(1.0, gt=0.0, le=1.0)
    """ρ_s after the schedule [inferred]."""
    token_keep_start: float = pieces.setting(0.5, gt=0.0, le=1.0)
    """ρ_t at the first batch: fraction of the kept rows' tokens kept [inferred]."""
    token_keep_end: float = pieces.setting(1.0, gt=0.0, le=1.0)
    """ρ_t after the schedule [inferred]."""
    schedule_steps: int = pieces.setting(100, ge=0)
    """Batches over which the keep ratios rise linearly (0: always *_end) [inferred]."""
    scale_rewards: bool = True
    """GRPO's std-normalised group advantage."""
    aggregation: ops.Aggregation = "seq-mean-token-mean"
    """Aggregation of GRPO's per-token loss (GRPO's per-response mean, which D³S builds on)."""


def init_state(cfg: Config):
    """0 batches seen."""
    return jnp.zeros((), jnp.int32)


def keep_ratios(cfg: Config, step):
    """(ρ_s, ρ_t) at batch `step`: linear from start to end over schedule_steps."""
    if cfg.schedule_steps <= 0:
        return jnp.float32(cfg.sample_keep_end), jnp.float32(cfg.token_keep_end)
    progress = jnp.minimum(step.astype(jnp.float32) / cfg.schedule_steps, 1.0)
    sample = cfg.sample_keep_start + (cfg.sample_keep_end - cfg.sample_keep_start) * progress
    token = cfg.token_keep_start + (cfg.token_keep_end - cfg.token_keep_start) * progress
    return sample, token


def max_variance_rows(adv_rows, group_size: int, keep_ratio):
    """[B] bool: per group, the m = ⌈ρ K⌉ rows whose advantages have the largest
    variance (the j largest and m − j smallest for the best j)."""
    grouped = ops.group_view(adv_rows, group_size)
    k = group_size
    m = jnp.clip(jnp.ceil(keep_ratio * k - 1e-6).astype(jnp.int32), 1, k)
    order = jnp.argsort(grouped, axis=1, stable=True)
    ordered = jnp.take_along_axis(grouped, order, axis=1)
    zero = jnp.zeros((grouped.shape[0], 1), grouped.dtype)
    p1 = jnp.concatenate([zero, jnp.cumsum(ordered, axis=1)], axis=1)
    p2 = jnp.concatenate([zero, jnp.cumsum(jnp.square(ordered), axis=1)], axis=1)
    top = jnp.arange(k + 1)                           # j: rows taken from the top
    bottom = jnp.clip(m - top, 0, k)                  # m − j from the bottom
    valid = top <= m
    total = p1[:, bottom] + p1[:, k:k + 1] - p1[:, k - top]
    squares = p2[:, bottom] + p2[:, k:k + 1] - p2[:, k - top]
    mf = m.astype(grouped.dtype)
    variance = squares / mf - jnp.square(total / mf)
    best = jnp.argmax(jnp.where(valid[None, :], variance, -jnp.inf), axis=1)
    position = jnp.arange(k)[None, :]
    chosen = (position < (m - best)[:, None]) | (position >= (k - best)[:, None])
    keep = jnp.take_along_axis(chosen, jnp.argsort(order, axis=1), axis=1)
    return keep.reshape(-1)


def select(rollout, row_adv, cfg: Config, step):
    """[B, T] bool: the tokens D³S keeps at batch `step`, from the rows' advantages."""
    sample_ratio, token_ratio = keep_ratios(cfg, step)
    rows = max_variance_rows(row_adv, rollout.group_size, sample_ratio)
    adv = ops.broadcast_to_tokens(row_adv, rollout)
    candidates = rows[:, None] & (ops.weighted_mask(rollout) > 0)
    score = jnp.abs(adv) * rollout.sample_entropy
    count = jnp.ceil(token_ratio * jnp.sum(candidates) - 1e-6).astype(jnp.int32)
    return ops.top_count_mask(score, candidates, count)


def advantages(rollout, cfg: Config, state):
    """GRPO's advantage, set to 0 off the D³S selection; counts the batch."""
    if cfg.scale_rewards:
        row_adv = ops.group_zscore(rollout.rewards, rollout.group_size, cfg.std_eps)
    else:
        row_adv = ops.group_centre(rollout.rewards, rollout.group_size)
    keep = select(rollout, row_adv, cfg, state)
    return jnp.where(keep, ops.broadcast_to_tokens(row_adv, rollout), 0.0), state + 1


def loss(stats, rollout, adv, cfg: Config, state):
    """GRPO's clipped surrogate (the selection lives in the advantages)."""
    eps_low, eps_high = cfg.clip_bounds
    total, metrics = ops.clipped_policy_loss(
        stats, rollout, adv, cfg.aggregation, eps_low=eps_low, eps_high=eps_high,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    metrics["kept_frac"] = ops.masked_mean((adv != 0).astype(jnp.float32), ops.weighted_mask(rollout))
    return total, metrics


register(Algorithm(
    name="d3s",
    family="policy-loss",
    paper="Learning More with Less: A Dynamic Dual-Level Down-Sampling Framework for Efficient Policy Optimization (Wang et al., 2025, arXiv:2509.22115)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    init_state=init_state,
    needs=frozenset({"sample_entropy"}),
    estimator_fields=("sample_keep_start", "sample_keep_end", "token_keep_start", "token_keep_end",
                      "schedule_steps", "scale_rewards", "std_eps"),
))
