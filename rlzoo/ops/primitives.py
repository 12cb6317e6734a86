"""Array primitives: masked statistics, ratios and log-ratios, KL estimators,
prefix and segment statistics, rewards to advantages (GAE, reward shaping),
token selection and hashed uniforms.

Every function is pure and jit-able, works in float32 and stays finite for
any finite input (fully masked rows, extreme log-probs). Notation: B rows,
T tokens; `mask` is `loss_mask · sample_weight` unless stated otherwise.
"""

from __future__ import annotations

from typing import Literal

import chex
import jax
import jax.numpy as jnp

from rlzoo.rollout import Rollout

Array = jax.Array

KLEstimator = Literal["k1", "k2", "k3"]
KL_ESTIMATORS: tuple[str, ...] = KLEstimator.__args__

LOG_RATIO_CLAMP = 20.0
"""|log π/π_old| is clamped here before `exp`: e^20 ≈ 5e8 is far past any clip."""


# --------------------------------------------------------------------------
# Masked statistics
# --------------------------------------------------------------------------

def masked_mean(x: Array, mask: Array, axis: int | tuple[int, ...] | None = None) -> Array:
    """Σ mask·x / Σ mask (0 where the mask is empty)."""
    chex.assert_equal_shape([x, mask])
    mask = mask.astype(jnp.float32)
    total = jnp.sum(jnp.where(mask != 0, x * mask, 0.0), axis=axis)
    return total / jnp.maximum(jnp.sum(mask, axis=axis), 1e-8)


def masked_max(x: Array, mask: Array) -> Array:
    chex.assert_equal_shape([x, mask])
    return jnp.max(jnp.where(mask != 0, x, -jnp.inf), initial=0.0)


def masked_whiten(x: Array, mask: Array, eps: float = 1e-8, shift_mean: bool = True) -> Array:
    """(x − mean) / sqrt(var + eps) with mean and (biased) variance over the masked
    entries of the whole batch; 0 off the mask."""
    chex.assert_equal_shape([x, mask])
    # Cleaned first: the backward pass of the square below would turn a NaN off the mask into a NaN gradient.
    x = jnp.where(mask != 0, x, 0.0)
    mean = masked_mean(x, mask)
    var = masked_mean(jnp.square(x - mean), mask)
    whitened = (x - mean) * jax.lax.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return jnp.where(mask != 0, whitened, 0.0)


def sequence_sum(per_token: Array, mask: Array) -> Array:
    """[B]: Σ_t mask·x per row."""
    chex.assert_rank([per_token, mask], 2)
    chex.assert_equal_shape([per_token, mask])
    return jnp.sum(jnp.where(mask != 0, per_token * mask, 0.0), axis=-1)


def sequence_mean(per_token: Array, mask: Array) -> Array:
    """[B]: Σ_t mask·x / Σ_t mask per row (0 for an empty row)."""
    chex.assert_rank([per_token, mask], 2)
    chex.assert_equal_shape([per_token, mask])
    return masked_mean(per_token, mask, axis=-1)


def effective_sample_size(x: Array, weights: Array) -> Array:
    """Normalised effective sample size of the importance weights x over the
    entries with weight m > 0 (Kong 1992):

        ESS = (Σ m x)² / (Σ m · Σ m x²)  ∈ (0, 1]

    1 when all x are equal, invariant to scaling x by c > 0, → 1/N when one
    entry dominates. 1 when there are no weighted entries."""
    chex.assert_equal_shape([x, weights])
    weights = weights.astype(jnp.float32)
    x = jnp.where(weights != 0, x, 0.0)
    s1 = jnp.sum(weights * x)
    s2 = jnp.sum(weights * jnp.square(x))
    n = jnp.sum(weights)
    denom = n * s2
    return jnp.where(denom > 0, jnp.square(s1) / jnp.where(denom > 0, denom, 1.0), 1.0)


def broadcast_to_tokens(per_row: Array, rollout: Rollout) -> Array:
    """[B] -> [B, T]: each row's value on its trained tokens, 0 elsewhere."""
    chex.assert_shape(per_row, rollout.loss_mask.shape[:1])
    return jnp.where(rollout.loss_mask, per_row[:, None], 0.0).astype(jnp.float32)


def row_values(per_token: Array, rollout: Rollout) -> Array:
    """[B]: the value a row-constant per-token array (e.g. from
    `broadcast_to_tokens`) holds on the row's trained tokens; 0 for a row
    with none. Reads one entry (the first trained token), so the value is
    exact: two rows with equal values compare equal whatever their lengths."""
    chex.assert_equal_shape([per_token, rollout.loss_mask])
    first = jnp.argmax(rollout.loss_mask, axis=1)
    value = jnp.take_along_axis(per_token, first[:, None], axis=1)[:, 0]
    return jnp.where(jnp.any(rollout.loss_mask, axis=1), value, 0.0)


# --------------------------------------------------------------------------
# Ratios and log-ratios
# --------------------------------------------------------------------------

def log_ratio(logp: Array, old_logp: Array, clamp: float = LOG_RATIO_CLAMP) -> Array:
    """log π_θ/π_old, clamped to [−clamp, clamp] so that `exp` stays finite."""
    if jnp.ndim(old_logp):  # a scalar old_logp is allowed (log-ratios of a ratio against 0)
        chex.assert_equal_shape([logp, old_logp])
    return jnp.clip(logp - old_logp, -clamp, clamp)


def ratio(logp: Array, old_logp: Array, clamp: float = LOG_RATIO_CLAMP) -> Array:
    """π_θ/π_old = exp(clamped log-ratio)."""
    return jnp.exp(log_ratio(logp, old_logp, clamp))


def sequence_log_ratio(logp: Array, old_logp: Array, mask: Array) -> Array:
    """[B]: (1/|y|) Σ_t log π_θ(y_t)/π_old(y_t) over the row's masked tokens, the
    log of GSPO's geometric-mean sequence ratio s = (π_θ(y)/π_old(y))^(1/|y|)
    (Zheng et al. 2025, arXiv:2507.18071). Per-token log-ratios are clamped
    first (`log_ratio`); an empty row gives 0 (s = 1)."""
    chex.assert_rank([logp, old_logp, mask], 2)
    chex.assert_equal_shape([logp, old_logp, mask])
    on = mask != 0
    return sequence_mean(log_ratio(jnp.where(on, logp, 0.0), jnp.where(on, old_logp, 0.0)), mask)


def stop_gradient_ratio(log_weight: Array, logp: Array, clamp: float = LOG_RATIO_CLAMP) -> Array:
    """exp(sg(w) + log π_θ − sg(log π_θ)) per token (the GSPO-token construction).

    Its value is e^w (w clamped to [−clamp, clamp]) and its gradient with
    respect to log π_θ(y_t) is that same value, so a sequence-, segment- or
    prefix-level ratio w enters the loss while the gradient of token t flows
    through token t only."""
    chex.assert_equal_rank([log_weight, logp])
    log_weight = jnp.clip(jax.lax.stop_gradient(log_weight), -clamp, clamp)
    return jnp.exp(log_weight + logp - jax.lax.stop_gradient(logp))


# --------------------------------------------------------------------------
# KL to the reference policy
# --------------------------------------------------------------------------

def kl_estimate(
    logp: Array,
    ref_logp: Array,
    estimator: KLEstimator = "k3",
    straight_through: bool = False,
    clamp: float = 10.0,
) -> Array:
    """Per-token estimate of KL(π_θ ‖ π_ref) from samples y ~ π_θ (Schulman 2020,
    "Approximating KL divergence"), with δ = log π_ref(y) − log π_θ(y):

        k1 = −δ                 unbiased, high variance, can be negative
        k2 = δ² / 2             biased, low variance
        k3 = e^δ − 1 − δ        unbiased, low variance, ≥ 0 (GRPO's estimator)

    δ is clamped to [−20, 20] (`LOG_RATIO_CLAMP`, as the ratios are) before
    anything else: e^δ overflows float32 past δ ≈ 88, and a k3 computed from
    a clamped exponent but the raw δ turns negative once δ exceeds
    e^20 ≈ 4.85e8 or is +∞ (log π = −∞). With the clamp every estimate is
    finite whenever δ is not NaN (log π = −∞ included) and keeps its sign: k1 that of
    log π − log π_ref, k2 and k3 ≥ 0. k1 and k2 differ from their formulas
    only beyond 20 nats. k3 is then clipped to [0, clamp]: above as in verl
    (whose default 10 binds before |δ| reaches 20, so the clamp on δ changes no
    k3 value), below against rounding (e^δ − 1 − δ ≥ 0 exactly).
    `straight_through` keeps the chosen estimator's value but takes the
    gradient of k2, whose gradient E[∇k2] = ∇KL is unbiased (the "+"
    variants in verl).
    """
    chex.assert_equal_shape([logp, ref_logp])
    delta = log_ratio(ref_logp, logp)
    k2 = 0.5 * jnp.square(delta)
    if estimator == "k1":
        value = -delta
    elif estimator == "k2":
        value = k2
    elif estimator == "k3":
        value = jnp.clip(jnp.expm1(delta) - delta, 0.0, clamp)
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {KL_ESTIMATORS}")
    if straight_through:
        return k2 + jax.lax.stop_gradient(value - k2)
    return value


# --------------------------------------------------------------------------
# Prefix and segment statistics
# --------------------------------------------------------------------------
# Used by CTPO and MinPRO (prefix ratios), SSPO and DHPO (segment / sequence
# ratios).

def prefix_sum(x: Array, mask: Array) -> Array:
    """[B, T]: Σ_{s ≤ t, mask_s} x_s along each row (untrained positions add 0).

    With x = log π_θ/π_old this is the log of the cumulative prefix ratio
    Π_{s ≤ t} r_s (CTPO)."""
    chex.assert_equal_shape([x, mask])
    return jnp.cumsum(jnp.where(mask != 0, x, 0.0), axis=-1)


def prefix_min(x: Array, mask: Array, *, exclusive: bool = False, initial: float = 0.0) -> Array:
    """[B, T]: min of x_s over the trained positions s ≤ t (s < t when
    `exclusive`) of each row, `initial` where that set is empty (MinPRO)."""
    chex.assert_equal_shape([x, mask])
    mask = mask != 0
    big = jnp.finfo(jnp.float32).max
    running = jax.lax.cummin(jnp.where(mask, x, big), axis=x.ndim - 1)
    seen = jnp.cumsum(mask, axis=-1)
    if exclusive:
        pad = [(0, 0)] * (x.ndim - 1) + [(1, 0)]
        running = jnp.pad(running[..., :-1], pad, constant_values=big)
        seen = seen - mask
    return jnp.where(seen > 0, running, initial)


def segment_index(segment_ids: Array, mask: Array) -> Array:
    """[B, T] int32: each trained token's segment, renumbered 0, 1, ... per row.

    A segment is a maximal run of trained tokens with one `segment_ids` value;
    untrained tokens between them (tool output) neither split nor join
    segments, so only the ids of trained tokens matter. Untrained positions
    get the index of the segment before them (0 before the first)."""
    chex.assert_equal_shape([segment_ids, mask])
    mask = mask != 0
    length = mask.shape[-1]
    positions = jnp.arange(length)
    last = jax.lax.cummax(jnp.where(mask, positions, -1), axis=mask.ndim - 1)
    previous = jnp.pad(last[..., :-1], [(0, 0)] * (mask.ndim - 1) + [(1, 0)], constant_values=-1)
    previous_id = jnp.take_along_axis(segment_ids, jnp.maximum(previous, 0), axis=-1)
    starts = mask & ((previous < 0) | (segment_ids != previous_id))
    return jnp.maximum(jnp.cumsum(starts, axis=-1) - 1, 0).astype(jnp.int32)


def segment_mean(x: Array, mask: Array, segment_ids: Array) -> Array:
    """[B, T]: on each trained token, the mean of x over the trained tokens of
    its segment (`segment_index`); 0 off the mask. One segment per row gives
    `sequence_mean`; one token per segment gives x itself (SSPO)."""
    chex.assert_rank([x, mask, segment_ids], 2)
    chex.assert_equal_shape([x, mask, segment_ids])
    mask = mask != 0
    index = segment_index(segment_ids, mask)
    length = mask.shape[-1]

    def row(values, on, idx):
        sums = jax.ops.segment_sum(jnp.where(on, values, 0.0), idx, num_segments=length)
        counts = jax.ops.segment_sum(on.astype(jnp.float32), idx, num_segments=length)
        return sums[idx] / jnp.maximum(counts[idx], 1.0)

    means = jax.vmap(row)(x.astype(jnp.float32), mask, index)
    return jnp.where(mask, means, 0.0)


# --------------------------------------------------------------------------
# Rewards to advantages and reward shaping
# --------------------------------------------------------------------------

def outcome_token_rewards(rollout: Rollout) -> Array:
    """[B, T]: the row's outcome reward on its last trained token, 0 elsewhere."""
    positions = jnp.arange(rollout.seq_len)
    last = jnp.max(jnp.where(rollout.loss_mask, positions, -1), axis=1)
    return jnp.where(positions[None, :] == last[:, None], rollout.rewards[:, None], 0.0)


def kl_reward_penalty(rollout: Rollout, kl_coef: float, estimator: KLEstimator = "k1") -> Array:
    """[B, T]: −β KL̂_t(π_old ‖ π_ref) on trained tokens, the per-token KL
    penalty that RLHF-style PPO, RLOO and REBEL add to the reward (estimated
    at the behaviour policy; outside the gradient). k1 is the plain log-ratio
    log π_old − log π_ref; k2 / k3 use `kl_estimate`."""
    if not kl_coef:
        return jnp.zeros(rollout.loss_mask.shape, jnp.float32)
    if estimator == "k1":
        penalty = -kl_coef * (rollout.behaviour_logprobs - rollout.ref_logprobs)
    else:
        penalty = -kl_coef * kl_estimate(rollout.behaviour_logprobs, rollout.ref_logprobs, estimator)
    return jnp.where(rollout.loss_mask, penalty, 0.0)


def gae(
    token_rewards: Array,
    values: Array,
    mask: Array,
    gamma: float,
    lam: float,
) -> tuple[Array, Array]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv:1506.02438)
    over the trained tokens of each row, skipping untrained positions (tool
    output, padding), with V = 0 after the last trained token:

        δ_t = r_t + γ V_{t'} − V_t        (t' = next trained position)
        A_t = δ_t + γλ A_{t'}
        R_t = A_t + V_t                   (the value target)

    With γ = λ = 1, A_t = Σ_{s ≥ t} r_s − V_t (return-to-go minus value).
    Returns (A, R), both [B, T] and 0 off the mask.
    """
    chex.assert_rank([token_rewards, values, mask], 2)
    chex.assert_equal_shape([token_rewards, values, mask])
    mask = mask.astype(bool)

    def step(carry, xs):
        next_value, next_adv = carry
        reward, value, on = xs
        delta = reward + gamma * next_value - value
        adv = delta + gamma * lam * next_adv
        carry = (jnp.where(on, value, next_value), jnp.where(on, adv, next_adv))
        return carry, jnp.where(on, adv, 0.0)

    zeros = jnp.zeros(values.shape[:1], jnp.float32)
    xs = (token_rewards.T.astype(jnp.float32), values.T.astype(jnp.float32), mask.T)
    _, adv = jax.lax.scan(step, (zeros, zeros), xs, reverse=True)
    adv = adv.T
    return adv, jnp.where(mask, adv + values, 0.0)


def overlong_penalty(
    lengths: Array,
    max_length: int,
    buffer: int,
    truncated: Array | None = None,
) -> Array:
    """[B]: DAPO's soft overlong punishment (Yu et al. 2025, arXiv:2503.14476, eq. 13),
    with L_max = max_length and L_cache = buffer, in tokens:

        0                               |y| ≤ L_max − L_cache
        ((L_max − L_cache) − |y|) / L_cache   L_max − L_cache < |y| ≤ L_max
        −1                              |y| > L_max, or the response was truncated

    A truncated response (no end token before the generation limit) is a
    response longer than L_max, so it gets −1 whatever its stored length."""
    lengths = jnp.asarray(lengths, jnp.float32)
    expected = max_length - buffer
    penalty = jnp.clip((expected - lengths) / max(buffer, 1), -1.0, 0.0)
    if buffer <= 0:
        penalty = jnp.where(lengths > max_length, -1.0, 0.0)
    if truncated is not None:
        penalty = jnp.where(truncated, -1.0, penalty)
    return penalty


# --------------------------------------------------------------------------
# Token selection
# --------------------------------------------------------------------------
# Covariance-ranked and random token selection (Clip-Cov, KL-Cov), and the
# top-k support of a distribution.

def token_covariance(adv: Array, logp: Array, valid: Array) -> Array:
    """[B, T]: (A_t − Ā)(log π_t − mean log π) with means over the `valid`
    tokens of the whole batch, 0 elsewhere, without gradient. Its mean is the
    covariance that drives the entropy change under policy gradient
    (Cui et al. 2025, arXiv:2505.22617, Clip-Cov / KL-Cov)."""
    chex.assert_equal_shape([adv, logp, valid])
    adv = jax.lax.stop_gradient(adv)
    logp = jax.lax.stop_gradient(logp)
    valid = valid != 0
    cov = (adv - masked_mean(adv, valid)) * (logp - masked_mean(logp, valid))
    return jnp.where(valid, cov, 0.0)


def fraction_count(valid: Array, fraction: float) -> Array:
    """int32 k = max(⌊fraction · N⌋, 1) for N valid tokens (verl's Clip-Cov /
    KL-Cov rule); 0 when fraction ≤ 0."""
    if fraction <= 0:
        return jnp.zeros((), jnp.int32)
    count = jnp.sum(valid != 0).astype(jnp.float32)
    return jnp.maximum(jnp.floor(fraction * count), 1.0).astype(jnp.int32)


def top_k_exact(score: Array, valid: Array, k: Array | int, tiebreak: Array) -> Array:
    """Bool mask of exactly min(k, #valid) `valid` entries: the highest `score`,
    ties resolved by the highest `tiebreak` (e.g. `token_uniform`, so the
    choice follows the tokens under row permutations), then by position.
    k may be traced. Unlike `top_count_mask`, ties never add entries."""
    chex.assert_equal_shape([score, valid, tiebreak])
    valid = valid != 0
    flat_score = jnp.where(valid, score, -jnp.inf).reshape(-1)
    order = jnp.lexsort((-tiebreak.reshape(-1), -flat_score))
    rank = jnp.zeros(flat_score.shape, jnp.int32).at[order].set(jnp.arange(flat_score.size, dtype=jnp.int32))
    return (rank.reshape(score.shape) < k) & valid


def top_count_mask(scores: Array, candidates: Array, count: Array | int) -> Array:
    """Bool mask (shape of `scores`) of the `count` highest-scoring entries
    among `candidates` over the whole array; entries tied with the count-th
    score are all kept. `count` may be traced; count ≤ 0 keeps nothing,
    count ≥ #candidates keeps every candidate. Candidate scores must be finite."""
    chex.assert_equal_shape([scores, candidates])
    flat = jnp.where(candidates, scores, -jnp.inf).reshape(-1)
    descending = -jnp.sort(-flat)
    index = jnp.clip(jnp.asarray(count) - 1, 0, flat.shape[0] - 1)
    threshold = descending[index]
    return candidates & (scores >= threshold) & (jnp.asarray(count) > 0)


def support_logprobs(topk_logprobs: Array, logp: Array) -> Array:
    """[B, T, k + 1]: the listed top-k log-probs of a distribution plus the
    sampled token's log-prob log π(y_t) when it is not among them (it is
    smaller than the k-th largest), −inf otherwise. The top-k carry no token
    ids, so "among them" is decided by value. Summaries of the distribution
    (probability mass, power sums, min-p filtering) over this support are
    exact when k covers the vocabulary and truncated otherwise."""
    chex.assert_shape(topk_logprobs, (*logp.shape, None))
    outside = logp < topk_logprobs[..., -1]
    extra = jnp.where(outside, logp, -jnp.inf)
    return jnp.concatenate([topk_logprobs, extra[..., None]], axis=-1)


# --------------------------------------------------------------------------
# Hashed uniforms
# --------------------------------------------------------------------------

def _mix32(h: Array) -> Array:
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def token_uniform(seed: Array | int, rollout: Rollout) -> Array:
    """[B, T] pseudo-random numbers in [0, 1), a hash of (seed, token id,
    position, behaviour log-prob bits) per token.

    Deterministic and counter-free: the number of a token does not depend on
    its row's index in the batch, so permuting rows permutes the numbers, and
    jit, eager and sharded runs agree. Used for random token selection
    without threading a PRNG key through the loss."""
    h = _mix32(jnp.asarray(seed).astype(jnp.uint32) + jnp.uint32(0x9E3779B9))
    positions = jnp.broadcast_to(jnp.arange(rollout.seq_len, dtype=jnp.uint32), rollout.tokens.shape)
    bits = jax.lax.bitcast_convert_type(rollout.behaviour_logprobs.astype(jnp.float32), jnp.uint32)
    for field in (rollout.tokens.astype(jnp.uint32), positions, bits):
        h = _mix32(h ^ (field * jnp.uint32(0x9E3779B1)) + jnp.uint32(0x7F4A7C15))
    return (h >> 8).astype(jnp.float32) * (1.0 / (1 << 24))
