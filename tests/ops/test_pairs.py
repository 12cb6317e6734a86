"""rlzoo.ops.pairs against naive re-derivations (numpy loops over pairs,
closed forms), each run eagerly and under jax.jit."""

import jax.numpy as jnp
import numpy as np
import pytest

from rlzoo import ops
from rlzoo.testing import assert_variants, random_batch

B, T = 8, 10
P = B // 2  # pairs
REWARDS = np.asarray([1.0, 0.0, -1.0, 2.0, 0.5, 0.5, 3.0, 1.0], np.float32)  # pair 2 is a tie
WEIGHTS = np.asarray([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0], np.float32)  # pair 3 has a dropped row


def _pairs(seed=0, **kwargs):
    rollout, stats = random_batch(seed, B, T, 2, **kwargs)
    return rollout.replace(rewards=jnp.asarray(REWARDS), sample_weight=jnp.asarray(WEIGHTS)), stats


def _naive_sign_weight():
    sign, weight = np.zeros(B, np.float32), np.zeros(P, np.float32)
    for p in range(P):
        a, b = REWARDS[2 * p], REWARDS[2 * p + 1]
        if a != b:
            sign[2 * p], sign[2 * p + 1] = (1, -1) if a > b else (-1, 1)
            weight[p] = float(min(WEIGHTS[2 * p], WEIGHTS[2 * p + 1]) > 0)
    return sign, weight


def _naive_scores(rollout, stats, reference, length_normalise):
    lp, ref = np.asarray(stats.logprobs, np.float64), np.asarray(rollout.ref_logprobs, np.float64)
    mask = np.asarray(rollout.loss_mask)
    out = np.zeros(B)
    for b in range(B):
        terms = [lp[b, t] - (ref[b, t] if reference else 0.0) for t in range(T) if mask[b, t]]
        if terms:
            out[b] = np.mean(terms) if length_normalise else np.sum(terms)
    return out


def _split(per_row, sign):
    chosen, rejected = np.zeros(P), np.zeros(P)
    for p in range(P):
        for row in (2 * p, 2 * p + 1):
            if sign[row] > 0:
                chosen[p] = per_row[row]
            elif sign[row] < 0:
                rejected[p] = per_row[row]
    return chosen, rejected


# --------------------------------------------------------------------------
# Pair signs and per-pair values
# --------------------------------------------------------------------------

def test_pair_preference_matches_loop():
    rollout, _ = _pairs()
    assert_variants(ops.pair_preference, rollout, expected=_naive_sign_weight())
    with pytest.raises(ValueError, match="group_size=2"):
        ops.pair_preference(random_batch(0, B, T, 4)[0])


def test_pair_margin_and_split_pairs_match_loop():
    sign, _ = _naive_sign_weight()
    x = np.random.default_rng(1).normal(0, 1, B).astype(np.float32)
    margin = np.asarray([sum(sign[r] * x[r] for r in (2 * p, 2 * p + 1)) for p in range(P)], np.float32)
    chosen, rejected = _split(x, sign)
    assert_variants(
        lambda x, s: (ops.pair_margin(x, s), ops.split_pairs(x, s)), jnp.asarray(x), jnp.asarray(sign),
        expected=(margin, (chosen.astype(np.float32), rejected.astype(np.float32))),
    )
    np.testing.assert_allclose(margin, chosen - rejected, rtol=1e-6)


# --------------------------------------------------------------------------
# Sequence scores
# --------------------------------------------------------------------------

@pytest.mark.parametrize("reference,length_normalise", [(True, False), (True, True), (False, False), (False, True)])
def test_sequence_scores_and_pair_scores_match_loop(reference, length_normalise):
    rollout, stats = _pairs(2, masked_rows=(5,))
    per_row = _naive_scores(rollout, stats, reference, length_normalise)
    sign, weight = _naive_sign_weight()
    chosen, rejected = _split(per_row, sign)
    kwargs = dict(reference=reference, length_normalise=length_normalise)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    assert_variants(
        lambda lp, r: ops.sequence_scores(lp, r, **kwargs), stats.logprobs, rollout, expected=f32(per_row), rtol=1e-5
    )

    def fn(s, r):
        scores = ops.pair_scores(s, r, **kwargs)
        return tuple(scores), scores.margin

    assert_variants(
        fn, stats, rollout,
        expected=((f32(chosen), f32(rejected), weight, sign, f32(per_row)), f32(chosen - rejected)), rtol=1e-5,
    )


# --------------------------------------------------------------------------
# Pairwise losses
# --------------------------------------------------------------------------

def test_logistic_pair_loss_closed_form_and_stability():
    z = np.asarray([-100.0, -3.0, -0.5, 0.0, 0.7, 4.0, 100.0], np.float64)
    softplus = lambda v: np.logaddexp(0.0, v)  # noqa: E731  −log σ(v) = softplus(−v)
    for w_pos, w_neg in [(1.0, 0.0), (0.9, 0.1), (1.25, -0.25)]:
        want = w_pos * softplus(-z) + w_neg * softplus(z)
        assert_variants(
            lambda z: ops.logistic_pair_loss(z, w_pos, w_neg), jnp.asarray(z, jnp.float32),
            expected=want.astype(np.float32), rtol=1e-5,
        )
    assert_variants(ops.logistic_pair_loss, jnp.asarray(z, jnp.float32), expected=softplus(-z).astype(np.float32))


def test_preference_loss_matches_loop():
    rollout, stats = _pairs(3)
    beta = 0.1
    per_row = _naive_scores(rollout, stats, True, False)
    sign, weight = _naive_sign_weight()
    chosen, rejected = _split(per_row, sign)
    per_pair = np.random.default_rng(3).uniform(0, 2, P)
    total = sum(weight[p] * per_pair[p] for p in range(P)) / (WEIGHTS.sum() / 2)
    decided = max(weight.sum(), 1.0)
    lp, ref = np.asarray(stats.logprobs, np.float64), np.asarray(rollout.ref_logprobs, np.float64)
    m = np.asarray(rollout.loss_mask) * WEIGHTS[:, None]
    delta = ref - lp
    kl = (m * (np.exp(delta) - 1 - delta)).sum() / m.sum()
    entropy = (m * np.asarray(stats.entropy)).sum() / m.sum()
    metrics = {
        "pref_loss": total,
        "reward_chosen": (weight * beta * chosen).sum() / decided,
        "reward_rejected": (weight * beta * rejected).sum() / decided,
        "reward_margin": (weight * beta * (chosen - rejected)).sum() / decided,
        "reward_accuracy": (weight * (chosen > rejected)).sum() / decided,
        "kl": kl, "entropy": entropy, "extra": 7.0,
    }

    def fn(s, r, x):
        scores = ops.pair_scores(s, r)
        return ops.preference_loss(x, scores, s, r, beta, extra={"extra": jnp.asarray(7.0)})

    assert_variants(
        fn, stats, rollout, jnp.asarray(per_pair, jnp.float32),
        expected=(np.float32(total), {k: np.float32(v) for k, v in metrics.items()}), rtol=1e-5, atol=1e-6,
    )
    # An explicit loss weight replaces the pair weights in the sum only.
    loss_weight = np.asarray([0.5, 1.0, 1.0, 0.0], np.float32)
    want = sum(loss_weight[p] * per_pair[p] for p in range(P)) / (WEIGHTS.sum() / 2)
    got, _ = ops.preference_loss(
        jnp.asarray(per_pair, jnp.float32), ops.pair_scores(stats, rollout), stats, rollout, beta,
        loss_weight=jnp.asarray(loss_weight),
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)


# --------------------------------------------------------------------------
# Pair advantages
# --------------------------------------------------------------------------

def test_pair_sign_advantage_and_pair_advantage_round_trip():
    rollout, _ = _pairs(4, masked_rows=(6,))
    mask = np.asarray(rollout.loss_mask)
    sign, _ = _naive_sign_weight()
    value = np.asarray([0.3, 1.5, 2.0, 0.7], np.float32)
    sign_adv = np.where(mask, sign[:, None], 0.0).astype(np.float32)
    adv = np.where(mask, (sign * np.repeat(value, 2))[:, None], 0.0).astype(np.float32)
    assert_variants(
        lambda r, v, s: (ops.pair_sign_advantage(r), ops.pair_advantage(v, s, r)),
        rollout, jnp.asarray(value), jnp.asarray(sign), expected=(sign_adv, adv),
    )


def test_pair_uniform_is_symmetric_in_the_pair():
    rollout, _ = _pairs(5)
    u = np.asarray(ops.pair_uniform(9, rollout))
    assert u.shape == (P,) and np.all((u >= 0) & (u < 1)) and len(np.unique(u)) == P
    assert_variants(lambda r, s: ops.pair_uniform(s, r), rollout, jnp.asarray(9), expected=u, rtol=0, atol=0)
    swapped = np.arange(B).reshape(P, 2)[:, ::-1].reshape(-1)
    np.testing.assert_allclose(ops.pair_uniform(9, rollout.select_rows(swapped)), u, rtol=1e-6)
    order = np.asarray([2, 0, 3, 1])
    rows = (2 * order[:, None] + np.arange(2)).reshape(-1)
    np.testing.assert_array_equal(ops.pair_uniform(9, rollout.select_rows(rows)), u[order])
