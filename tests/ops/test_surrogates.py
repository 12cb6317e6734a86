"""rlzoo.ops.surrogates against naive re-derivations (numpy loops over
tokens and pairs, closed-form gradients), each run eagerly and under jax.jit."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import ops
from rlzoo.testing import assert_variants, random_batch

B, T, K = 8, 10, 4
G = B // K


def _batch(seed, **kwargs):
    rollout, stats = random_batch(seed, B, T, K, **kwargs)
    weight = np.asarray([1.0, 1.0, 0.0, 1.0, 2.0, 1.0, 1.0, 0.5], np.float32)
    return rollout.replace(sample_weight=jnp.asarray(weight)), stats


def _np(rollout, stats):
    """float64 numpy copies: logp, old, ref, entropy, loss_mask, sample_weight."""
    return (
        np.asarray(stats.logprobs, np.float64), np.asarray(rollout.behaviour_logprobs, np.float64),
        np.asarray(rollout.ref_logprobs, np.float64), np.asarray(stats.entropy, np.float64),
        np.asarray(rollout.loss_mask, np.float64), np.asarray(rollout.sample_weight, np.float64),
    )


def naive_weights(mask, weight, mode):
    """[B, T] aggregation weights, token by token."""
    w = np.zeros(mask.shape)
    n_tokens = sum(mask[b, t] * weight[b] for b in range(B) for t in range(T))
    for b in range(B):
        for t in range(T):
            m = mask[b, t] * weight[b]
            if mode == "token-mean":
                w[b, t] = m / n_tokens
            elif mode == "seq-mean-token-mean":
                w[b, t] = m / (max(mask[b].sum(), 1) * weight.sum())
            else:
                raise AssertionError(mode)
    return w


def naive_k3(logp, ref):
    delta = ref - logp
    return np.clip(np.exp(delta) - 1 - delta, -10, 10)


def naive_surrogate(r, a, lo, hi, dual=None):
    loss, clipped = np.zeros(r.shape), np.zeros(r.shape, bool)
    for i in np.ndindex(r.shape):
        unclipped, bounded = -r[i] * a[i], -min(max(r[i], 1 - lo), 1 + hi) * a[i]
        loss[i], clipped[i] = max(unclipped, bounded), bounded > unclipped
        if dual is not None and a[i] < 0 and loss[i] > -dual * a[i]:
            loss[i], clipped[i] = -dual * a[i], True
    return loss, clipped


def _masked_mean(x, m):
    return (x * m).sum() / m.sum()


# --------------------------------------------------------------------------
# Clipped surrogate
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dual", [None, 3.0])
def test_clipped_surrogate_matches_loop(dual):
    rng = np.random.default_rng(0)
    r = rng.uniform(0.2, 3.0, (B, T)).astype(np.float32)
    a = rng.normal(0, 1, (B, T)).astype(np.float32)
    loss, clipped = naive_surrogate(r.astype(np.float64), a.astype(np.float64), 0.2, 0.28, dual)
    assert_variants(
        lambda r, a: ops.clipped_surrogate(r, a, 0.2, 0.28, dual), jnp.asarray(r), jnp.asarray(a),
        expected=(loss.astype(np.float32), clipped),
    )


@given(
    st.lists(st.floats(0.01, 5.0), min_size=20, max_size=20).map(np.asarray),
    st.lists(st.floats(-3.0, 3.0).filter(lambda a: a == 0 or abs(a) > 1e-6), min_size=20, max_size=20).map(np.asarray),
    st.floats(0.05, 0.5), st.floats(0.05, 0.5),
)
def test_clipped_surrogate_is_pessimistic_and_gradient_is_zero_when_clipped(r, adv, lo, hi):
    r, adv = jnp.asarray(r, jnp.float32), jnp.asarray(adv, jnp.float32)
    loss, clipped = ops.clipped_surrogate(r, adv, lo, hi)
    assert np.all(np.asarray(loss) >= np.asarray(-r * adv) - 1e-5)
    grad = jax.grad(lambda x: ops.clipped_surrogate(x, adv, lo, hi)[0].sum())(r)
    clipped = np.asarray(clipped)
    assert np.all(np.asarray(grad)[clipped] == 0)
    # Exactly on a clip bound the two branches tie and the gradient is split between them.
    free = ~clipped & ~np.isclose(np.asarray(r), 1 - lo, rtol=0, atol=1e-6) & ~np.isclose(np.asarray(r), 1 + hi, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grad)[free], -np.asarray(adv)[free], rtol=1e-6, atol=1e-30)
    # Outside [1 - lo, 1 + hi] in the direction the advantage pushes: always clipped.
    push = ((np.asarray(adv) > 0) & (np.asarray(r) > 1 + hi + 1e-3)) | ((np.asarray(adv) < 0) & (np.asarray(r) < 1 - lo - 1e-3))
    assert np.all(clipped[push])


def test_dual_clip_bounds_negative_advantage_loss():
    r = jnp.asarray([0.5, 1.0, 5.0, 50.0])
    adv = jnp.full((4,), -2.0)
    loss, clipped = ops.clipped_surrogate(r, adv, 0.2, 0.2, dual_clip=3.0)
    np.testing.assert_allclose(loss, [0.8 * 2, 2.0, 6.0, 6.0], rtol=1e-6)
    assert list(np.asarray(clipped)) == [True, False, True, True]


# --------------------------------------------------------------------------
# Shared loss assembly and metrics
# --------------------------------------------------------------------------

@pytest.mark.parametrize("mode,kl_coef,entropy_coef", [("token-mean", 0.0, 0.0), ("seq-mean-token-mean", 0.1, 0.01)])
def test_regularised_policy_loss_matches_loop(mode, kl_coef, entropy_coef):
    rollout, stats = _batch(1)
    logp, _, ref, ent, mask, weight = _np(rollout, stats)
    pg = np.random.default_rng(1).normal(0, 1, (B, T))
    w = naive_weights(mask, weight, mode)
    kl = naive_k3(logp, ref)
    m = mask * weight[:, None]
    want = (w * (pg + kl_coef * kl - entropy_coef * ent)).sum()
    metrics = {"pg_loss": (w * pg).sum(), "kl": _masked_mean(kl, m), "entropy": _masked_mean(ent, m)}
    assert_variants(
        lambda p, s, r: ops.regularised_policy_loss(p, s, r, mode, kl_coef=kl_coef, entropy_coef=entropy_coef),
        jnp.asarray(pg, jnp.float32), stats, rollout,
        expected=(np.float32(want), {k: np.float32(v) for k, v in metrics.items()}), rtol=1e-5,
    )


def test_regularised_policy_loss_without_reference_or_entropy_logs_pg_only():
    rollout, stats = _batch(2)
    rollout, stats = rollout.replace(ref_logprobs=None), stats.replace(entropy=None)
    mask, weight = np.asarray(rollout.loss_mask, np.float64), np.asarray(rollout.sample_weight, np.float64)
    pg = np.random.default_rng(2).normal(0, 1, (B, T))
    want = np.float32((naive_weights(mask, weight, "token-mean") * pg).sum())
    assert_variants(
        lambda p, s, r: ops.regularised_policy_loss(p, s, r, "token-mean"), jnp.asarray(pg, jnp.float32), stats,
        rollout, expected=(want, {"pg_loss": want}),
    )


def test_reinforce_loss_value_and_gradient():
    rollout, stats = _batch(3)
    logp, _, ref, ent, mask, weight = _np(rollout, stats)
    adv = np.random.default_rng(3).normal(0, 1, (B, T))
    w = naive_weights(mask, weight, "seq-mean-token-mean")
    m = mask * weight[:, None]

    def fn(s, r, a):
        (loss, metrics), grad = jax.value_and_grad(
            lambda s: ops.reinforce_loss(s, r, a, "seq-mean-token-mean"), has_aux=True
        )(s)
        return loss, metrics, grad.logprobs

    want = (w * -adv * logp).sum()
    metrics = {"pg_loss": want, "kl": _masked_mean(naive_k3(logp, ref), m), "entropy": _masked_mean(ent, m)}
    assert_variants(
        fn, stats, rollout, jnp.asarray(adv, jnp.float32),
        expected=(np.float32(want), {k: np.float32(v) for k, v in metrics.items()}, (-w * adv).astype(np.float32)),
        rtol=1e-5, atol=1e-7,
    )


def test_ratio_metrics_match_loop():
    rollout, stats = _batch(4)
    _, _, _, _, mask, weight = _np(rollout, stats)
    rng = np.random.default_rng(4)
    r = rng.uniform(0.5, 2.0, (B, T)).astype(np.float32)
    clipped = rng.random((B, T)) < 0.3
    m = mask * weight[:, None]
    want = {
        "ratio_mean": _masked_mean(r, m),
        "ratio_max": max(r[b, t] for b in range(B) for t in range(T) if m[b, t]),
        "clip_frac": _masked_mean(clipped, m),
    }
    assert_variants(
        ops.ratio_metrics, jnp.asarray(r), jnp.asarray(clipped), rollout,
        expected={k: np.float32(v) for k, v in want.items()},
    )
    del want["clip_frac"]
    assert_variants(lambda r, ro: ops.ratio_metrics(r, None, ro), jnp.asarray(r), rollout,
                    expected={k: np.float32(v) for k, v in want.items()})


def test_clipped_policy_loss_matches_loop():
    rollout, stats = _batch(5)
    logp, old, ref, ent, mask, weight = _np(rollout, stats)
    adv = np.random.default_rng(5).normal(0, 1, (B, T))
    r = np.exp(np.clip(logp - old, -20, 20))
    pg, clipped = naive_surrogate(r, adv, 0.2, 0.28)
    w = naive_weights(mask, weight, "token-mean")
    m = mask * weight[:, None]
    kl = naive_k3(logp, ref)
    want = (w * (pg + 0.05 * kl)).sum()
    metrics = {
        "pg_loss": (w * pg).sum(), "kl": _masked_mean(kl, m), "entropy": _masked_mean(ent, m),
        "ratio_mean": _masked_mean(r, m), "ratio_max": np.max(np.where(m > 0, r, 0.0)),
        "clip_frac": _masked_mean(clipped, m),
    }
    assert_variants(
        lambda s, ro, a: ops.clipped_policy_loss(s, ro, a, "token-mean", eps_low=0.2, eps_high=0.28, kl_coef=0.05),
        stats, rollout, jnp.asarray(adv, jnp.float32),
        expected=(np.float32(want), {k: np.float32(v) for k, v in metrics.items()}), rtol=1e-5,
    )


def test_weighted_score_function_loss_value_and_gradient():
    rollout, stats = _batch(6)
    logp, old, ref, ent, mask, weight = _np(rollout, stats)
    rng = np.random.default_rng(6)
    adv = rng.normal(0, 1, (B, T))
    is_weight = rng.uniform(0.0, 2.0, (B, T))
    blocked = is_weight < 0.2
    w = naive_weights(mask, weight, "token-mean")
    m = mask * weight[:, None]
    r = np.exp(np.clip(logp - old, -20, 20))

    def fn(s, ro, a, iw, c):
        (loss, metrics), (grad_s, grad_w) = jax.value_and_grad(
            lambda s, iw: ops.weighted_score_function_loss(s, ro, a, iw, "token-mean", clipped=c),
            argnums=(0, 1), has_aux=True,
        )(s, iw)
        return loss, metrics, grad_s.logprobs, grad_w

    want = (w * -adv * is_weight * logp).sum()
    metrics = {
        "pg_loss": want, "kl": _masked_mean(naive_k3(logp, ref), m), "entropy": _masked_mean(ent, m),
        "ratio_mean": _masked_mean(r, m), "ratio_max": np.max(np.where(m > 0, r, 0.0)),
        "clip_frac": _masked_mean(blocked, m),
    }
    assert_variants(
        fn, stats, rollout, jnp.asarray(adv, jnp.float32), jnp.asarray(is_weight, jnp.float32), jnp.asarray(blocked),
        expected=(np.float32(want), {k: np.float32(v) for k, v in metrics.items()},
                  (-w * adv * is_weight).astype(np.float32), np.zeros((B, T), np.float32)),
        rtol=1e-5, atol=1e-7,
    )


# --------------------------------------------------------------------------
# Self-play: pairwise log-ratio regression
# --------------------------------------------------------------------------

def _naive_pair_regression(pred, target, weight):
    total = 0.0
    for g in range(G):
        for i, j in itertools.combinations(range(g * K, (g + 1) * K), 2):
            total += min(weight[i], weight[j]) * ((pred[i] - pred[j]) - (target[i] - target[j])) ** 2
    return total / (weight.sum() * (K - 1) / 2)


def test_behaviour_sequence_log_ratio_matches_loop():
    rollout, stats = _batch(7, masked_rows=(1,))
    logp, old, _, _, mask, weight = _np(rollout, stats)
    s = np.asarray([sum(logp[b, t] - old[b, t] for t in range(T) if mask[b, t]) for b in range(B)])
    m = mask * weight[:, None]
    r = np.exp(np.clip(logp - old, -20, 20))
    metrics = {
        "seq_log_ratio": _masked_mean(s, weight),
        "ratio_mean": _masked_mean(r, m), "ratio_max": np.max(np.where(m > 0, r, 0.0)),
    }
    assert_variants(
        ops.behaviour_sequence_log_ratio, stats, rollout,
        expected=(s.astype(np.float32), {k: np.float32(v) for k, v in metrics.items()}), rtol=1e-5, atol=1e-6,
    )


def test_group_pair_regression_matches_loop_and_ignores_group_constants():
    rollout, _ = _batch(8)
    weight = np.asarray(rollout.sample_weight, np.float64)
    rng = np.random.default_rng(8)
    pred, target = rng.normal(0, 1, B), rng.normal(0, 1, B)
    want = _naive_pair_regression(pred, target, weight)
    assert_variants(
        ops.group_pair_regression, jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32), rollout,
        expected=np.float32(want), rtol=1e-5,
    )
    shifted = pred + np.repeat(rng.normal(0, 5, G), K)
    np.testing.assert_allclose(
        ops.group_pair_regression(jnp.asarray(shifted, jnp.float32), jnp.asarray(target, jnp.float32), rollout),
        want, rtol=1e-4,
    )


def test_behaviour_log_ratio_regression_matches_loop():
    rollout, stats = _batch(9)
    logp, old, _, _, mask, weight = _np(rollout, stats)
    target = np.random.default_rng(9).normal(0, 1, B)
    s = np.asarray([sum(logp[b, t] - old[b, t] for t in range(T) if mask[b, t]) for b in range(B)])
    want = _naive_pair_regression(s, target, weight)
    m = mask * weight[:, None]
    r = np.exp(np.clip(logp - old, -20, 20))
    metrics = {
        "seq_log_ratio": _masked_mean(s, weight), "ratio_mean": _masked_mean(r, m),
        "ratio_max": np.max(np.where(m > 0, r, 0.0)), "pg_loss": want,
    }
    assert_variants(
        ops.behaviour_log_ratio_regression, stats, rollout, jnp.asarray(target, jnp.float32),
        expected=(np.float32(want), {k: np.float32(v) for k, v in metrics.items()}), rtol=1e-5, atol=1e-6,
    )
