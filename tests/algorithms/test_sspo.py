"""SSPO's invariants (Yang et al. 2025, arXiv:2511.04256): segment means match
a loop; one segment per response is GSPO (GSPO-token form), one token per
segment is GRPO; the entropy clip scale lies in [1/κ, κ] and grows with the
segment's relative entropy; on-policy the gradient is REINFORCE's."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.algorithms.sspo import clip_scale
from rlzoo.testing import compiled, on_policy, random_batch, reinforce_gradient

SSPO = get_algorithm("sspo")
GRPO = get_algorithm("grpo")
GSPO_TOKEN = get_algorithm("gspo_token")
GSPO = get_algorithm("gspo")
B, T, K = 8, 10, 4
seeds = st.integers(0, 2**16)
FIXED = SSPO.Config(entropy_alpha=0.0)


# One compilation per (algorithm, config) across hypothesis examples.
compiled = functools.cache(compiled)


def _batch(seed, shift):
    rollout, stats = random_batch(seed, B, T, K)
    rng = np.random.default_rng(seed + 9)
    logp = np.asarray(rollout.behaviour_logprobs) + shift * rng.normal(0, 1, (B, T))
    return rollout, stats.replace(logprobs=jnp.asarray(np.minimum(logp, 0.0), jnp.float32))


def _naive_segment_mean(x, mask, ids):
    """Segments = maximal runs of trained tokens with one id (untrained tokens skipped)."""
    out = np.zeros_like(x, dtype=np.float64)
    for b in range(x.shape[0]):
        runs, current, last_id = [], [], None
        for t in np.flatnonzero(mask[b]):
            if current and ids[b, t] != last_id:
                runs.append(current)
                current = []
            current.append(t)
            last_id = ids[b, t]
        if current:
            runs.append(current)
        for run in runs:
            out[b, run] = np.mean(x[b, run])
    return out


@given(seeds, st.integers(1, 4))
def test_segment_mean_matches_a_loop(seed, n_ids):
    rollout, stats = random_batch(seed, B, T, K, masked_rows=(4,))
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, n_ids, (B, T))  # repeated, non-contiguous ids included
    mask = np.asarray(rollout.loss_mask)
    x = np.asarray(stats.logprobs, np.float64)
    got = ops.segment_mean(stats.logprobs, rollout.loss_mask, jnp.asarray(ids, jnp.int32))
    np.testing.assert_allclose(got, _naive_segment_mean(x, mask, ids), rtol=1e-5, atol=1e-6)


@given(seeds, st.sampled_from([0.02, 0.3, 1.0]))
def test_one_token_per_segment_is_grpo(seed, shift):
    rollout, stats = _batch(seed, shift)
    rollout = rollout.replace(segment_ids=jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T)))
    grpo_cfg = GRPO.Config(clip_eps_low=0.2, kl_coef=0.0, aggregation="seq-mean-token-mean")
    adv, _ = GRPO.advantages(rollout, grpo_cfg, ())
    loss, _, grads = compiled(SSPO, FIXED)(stats, rollout, adv)
    ref_loss, _, ref = compiled(GRPO, grpo_cfg)(stats, rollout, adv)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads.logprobs, ref.logprobs, rtol=1e-5, atol=1e-7)


@given(seeds, st.sampled_from([0.02, 0.3, 1.0]))
def test_one_segment_per_response_is_gspo(seed, shift):
    rollout, stats = _batch(seed, shift)
    rollout = rollout.replace(segment_ids=jnp.zeros((B, T), jnp.int32))
    adv, _ = GRPO.advantages(rollout, GRPO.Config(), ())
    loss, _, grads = compiled(SSPO, FIXED)(stats, rollout, adv)
    for algo in (GSPO_TOKEN, GSPO):  # same value and gradient for per-response advantages
        cfg = algo.Config(clip_eps_low=0.2, clip_eps_high=0.2)
        ref_loss, _, ref = compiled(algo, cfg)(stats, rollout, adv)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grads.logprobs, ref.logprobs, rtol=1e-4, atol=1e-7)


@given(seeds)
def test_clip_scale_is_bounded_and_grows_with_relative_segment_entropy(seed):
    rollout, _ = random_batch(seed, B, T, K)
    cfg = SSPO.Config()
    scale = np.asarray(clip_scale(rollout, cfg))
    assert np.all(scale >= 1 / cfg.entropy_scale_max - 1e-6) and np.all(scale <= cfg.entropy_scale_max + 1e-6)
    mask = np.asarray(rollout.loss_mask)
    ent = np.asarray(rollout.sample_entropy, np.float64)
    seg = _naive_segment_mean(ent, mask, np.asarray(rollout.segment_ids))
    for b in range(B):
        on = mask[b]
        if on.any():
            order = np.argsort(seg[b, on], kind="stable")
            assert np.all(np.diff(scale[b, on][order]) >= -1e-6)  # monotone in H̄_k within a response
    flat = clip_scale(rollout.replace(sample_entropy=jnp.ones((B, T))), cfg)
    assert np.all(np.asarray(flat) == 1.0)


@given(seeds)
def test_on_policy_gradient_is_reinforce(seed):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = SSPO.Config()
    adv, _ = SSPO.advantages(rollout, cfg, ())
    _, metrics, grads = compiled(SSPO, cfg)(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "seq-mean-token-mean"),
                               rtol=1e-5, atol=1e-7)
    assert metrics["clip_frac"] == 0


@pytest.mark.parametrize("field, value, message", [
    ("entropy_scale_max", 0.5, "--entropy-scale-max must be >= 1.0"),
    ("entropy_alpha", -1.0, "--entropy-alpha must be >= 0.0"),
    ("clip_eps_low", -0.2, "--clip-eps-low must be >= 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        SSPO.Config(**{field: value})
