"""Shared math for the zoo, by topic:

    primitives   masked statistics, ratios and log-ratios, KL estimators,
                 prefix / segment statistics, GAE and reward shaping, token
                 selection, hashed uniforms
    groups       group views, moments, z-scores, leave-one-out baselines,
                 masked group statistics, pair differences and win rates
    aggregation  token weights, cleaned loss inputs and every aggregate*
                 reduction to a scalar loss
    surrogates   clipped surrogate, shared loss assembly, score-function
                 losses, ratio metrics, log-ratio regressions
    pairs        preference pairs: signs, sequence scores, pairwise losses
    turns        multi-turn rows: returns-to-go over turns, anchor-state
                 groups, per-turn values onto the turn's tokens

Every function is pure and jit-able, works in float32 and stays finite for
any finite input (fully masked rows, all-equal groups, extreme log-probs).
Values off the loss mask never reach a loss or its gradient, even NaN / ±∞:
the losses clean their inputs first (`loss_inputs`).
Notation: B rows, T tokens, K rows per group, G = B / K groups; `mask` is
`loss_mask · sample_weight` unless stated otherwise. Everything public is
re-exported here: `from rlzoo import ops; ops.group_zscore(...)`.
"""

from __future__ import annotations

from rlzoo.ops.primitives import (
    KLEstimator, KL_ESTIMATORS, LOG_RATIO_CLAMP, masked_mean, masked_max, masked_whiten,
    sequence_sum, sequence_mean, effective_sample_size, broadcast_to_tokens, row_values, log_ratio,
    ratio, sequence_log_ratio, stop_gradient_ratio, kl_estimate, prefix_sum, prefix_min,
    segment_index, segment_mean, outcome_token_rewards, kl_reward_penalty, gae, overlong_penalty,
    token_covariance, fraction_count, top_k_exact, top_count_mask, support_logprobs, token_uniform,
)
from rlzoo.ops.groups import (
    group_view, group_mean, group_std, group_centre, group_zscore, leave_one_out_baseline,
    group_advantage, degenerate_groups, group_masked_mean, group_masked_softmax,
    group_masked_logmeanexp, group_value_entropy, group_pair_differences, group_pair_weight,
    group_win_rates,
)
from rlzoo.ops.turns import (
    turn_valid, discounted_turn_returns, anchor_group_advantage, turn_values_to_tokens,
)
from rlzoo.ops.aggregation import (
    Aggregation, AGGREGATIONS, weighted_mask, loss_inputs, token_weights, aggregate, aggregate_rows,
    aggregate_pairs, aggregate_group_pairs, aggregate_groups,
)
from rlzoo.ops.surrogates import (
    clipped_surrogate, regularised_policy_loss, ratio_metrics, reinforce_loss, clipped_policy_loss,
    weighted_score_function_loss, behaviour_sequence_log_ratio, group_pair_regression,
    behaviour_log_ratio_regression,
)
from rlzoo.ops.pairs import (
    PairMode, pair_preference, pair_margin, split_pairs, PairScores, sequence_scores, pair_scores,
    logistic_pair_loss, preference_loss, pair_sign_advantage, pair_advantage, pair_sign_targets, centred_reward_targets,
    pair_uniform,
)

__all__ = [
    "turn_valid", "discounted_turn_returns", "anchor_group_advantage", "turn_values_to_tokens",
    "KLEstimator", "KL_ESTIMATORS", "LOG_RATIO_CLAMP", "masked_mean", "masked_max", "masked_whiten",
    "sequence_sum", "sequence_mean", "effective_sample_size", "broadcast_to_tokens", "row_values",
    "log_ratio", "ratio", "sequence_log_ratio", "stop_gradient_ratio", "kl_estimate", "prefix_sum",
    "prefix_min", "segment_index", "segment_mean", "outcome_token_rewards", "kl_reward_penalty",
    "gae", "overlong_penalty", "token_covariance", "fraction_count", "top_k_exact",
    "top_count_mask", "support_logprobs", "token_uniform", "group_view", "group_mean", "group_std",
    "group_centre", "group_zscore", "leave_one_out_baseline", "group_advantage",
    "degenerate_groups", "group_masked_mean", "group_masked_softmax", "group_masked_logmeanexp",
    "group_value_entropy", "group_pair_differences", "group_pair_weight", "group_win_rates",
    "Aggregation", "AGGREGATIONS", "weighted_mask", "loss_inputs", "token_weights", "aggregate", "aggregate_rows",
    "aggregate_pairs", "aggregate_group_pairs", "aggregate_groups", "clipped_surrogate",
    "regularised_policy_loss", "ratio_metrics", "reinforce_loss", "clipped_policy_loss",
    "weighted_score_function_loss", "behaviour_sequence_log_ratio", "group_pair_regression",
    "behaviour_log_ratio_regression", "PairMode", "pair_preference", "pair_margin", "split_pairs", "PairScores",
    "sequence_scores", "pair_scores", "logistic_pair_loss", "preference_loss",
    "pair_sign_advantage", "pair_advantage", "pair_sign_targets", "centred_reward_targets", "pair_uniform",
]
