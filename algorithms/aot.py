"""AOT: Alignment via Optimal Transport (paired, distributional dominance).

Paper: Melnyk, Mroueh, Belgodere, Rigotti, Nitsure, Yurochkin, Greenewald,
Navratil, Ross, "Distributional Preference Alignment of LLMs via Optimal
Transport", NeurIPS 2024, arXiv:2406.05882 (section 3, AOT paired).

AOT asks for first-order stochastic dominance of the policy's chosen-over-
rejected log-likelihood margin over the reference's, not pair by pair but
as distributions over the batch. In one dimension the optimal-transport
coupling is the sorted matching, so with

    ρ_i = log π_θ(y_w,i) − log π_θ(y_l,i),   ρ_i^ref = log π_ref(y_w,i) − log π_ref(y_l,i)

sorted separately over the batch's decided pairs, ρ_(1) ≤ … ≤ ρ_(n) and
ρ^ref_(1) ≤ … ≤ ρ^ref_(n), the loss is the (smoothed) logistic loss on the
matched quantile differences:

    L = (1/n) Σ_k −(1 − ε) log σ(β(ρ_(k) − ρ^ref_(k))) − ε log σ(−β(ρ_(k) − ρ^ref_(k)))

With a single pair AOT is DPO. Batch coupling: the sorted matching pairs the
k-th smallest policy margin of the whole minibatch with the k-th smallest
reference margin, so splitting a minibatch into microbatches sorts within
each piece and changes the loss — AOT is exempt from the microbatch
invariant for that reason (it is a whole-batch quantile method). It is
invariant to permuting pairs.

Equivalents: TRL `DPOTrainer(loss_type="aot", label_smoothing=ε)` (TRL's
`aot_unpaired` sorts chosen and rejected log-ratios separately). Verified
against TRL 1.16 `trl/trainer/dpo_trainer.py` (`aot` branch, parity test).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.Pairing):
    beta: float = pieces.setting(0.1, gt=0.0)
    """β: inverse temperature on the matched margin differences (TRL default 0.1)."""
    label_smoothing: float = pieces.setting(0.0, ge=0.0, le=1.0)
    """ε: assumed label-flip probability (0 in TRL's default)."""


def sorted_margin_differences(policy_margin, ref_margin, valid):
    """[G]: ρ_(k) − ρ^ref_(k) for the k-th smallest of each over the valid
    pairs (first n = Σ valid entries), 0 for k ≥ n. Invalid pairs sort last."""
    big = jnp.finfo(jnp.float32).max / 4
    policy_sorted = jnp.sort(jnp.where(valid, policy_margin, big))
    ref_sorted = jnp.sort(jnp.where(valid, ref_margin, big))
    rank_valid = jnp.arange(valid.shape[0]) < jnp.sum(valid)
    return jnp.where(rank_valid, policy_sorted - ref_sorted, 0.0), rank_valid


def loss(stats, rollout, adv, cfg: Config, state):
    """Mean over the sorted matching of the smoothed −log σ(β(ρ_(k) − ρ^ref_(k)))."""
    scores = ops.pair_scores(stats, rollout, reference=False)
    ref_chosen, ref_rejected = ops.split_pairs(
        ops.sequence_scores(rollout.ref_logprobs, rollout, reference=False), scores.sign
    )
    valid = scores.weight > 0
    delta, rank_valid = sorted_margin_differences(scores.margin, ref_chosen - ref_rejected, valid)
    eps = cfg.label_smoothing
    per_rank = ops.logistic_pair_loss(cfg.beta * delta, 1.0 - eps, eps)
    log_ratio = ops.PairScores(
        scores.chosen - ref_chosen, scores.rejected - ref_rejected, scores.weight, scores.sign, scores.per_row
    )
    # The k-th matched quantile counts once for each of the n decided pairs.
    return ops.preference_loss(
        per_rank, log_ratio, stats, rollout, cfg.beta, loss_weight=rank_valid.astype(jnp.float32)
    )


register(Algorithm(
    name="aot",
    family="preference",
    paper="Distributional Preference Alignment of LLMs via Optimal Transport (Melnyk et al., 2024, arXiv:2406.05882)",
    Config=Config,
    advantages=ops.pair_sign_targets,
    loss=loss,
    needs=frozenset({"ref_logprobs"}),
    pairwise=True,
    prepare=pair_groups,
    exemptions={"microbatch": "the optimal-transport coupling sorts the policy and reference margins over the "
                "whole minibatch (a batch-level quantile matching), so per-microbatch sorting differs"},
))
