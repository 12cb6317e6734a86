"""CAPO's invariants (Melo et al. 2025, arXiv:2510.00819; checked against
luckeciano/stable-pg-llm; the SGD last-layer model's logit step is [inferred])."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.algorithms.capo import curvature, keep_mask
from rlzoo.testing import loss_and_grad, random_batch

CAPO = get_algorithm("capo")
GRPO = get_algorithm("grpo")
K, B, T, V = 4, 8, 10, 6
taus = st.one_of(st.none(), st.floats(1e-6, 1.0))


def full_vocab_batch(seed, k=V):
    """A batch whose log-probs come from explicit distributions over V tokens,
    with the k largest log-probs of each as `topk_logprobs`."""
    rollout, stats = random_batch(seed, B, T, K)
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (B, T, V))
    logp_all = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = rng.integers(0, V, (B, T))
    logp = np.take_along_axis(logp_all, picked[..., None], -1)[..., 0]
    stats = stats.replace(
        logprobs=jnp.asarray(logp, jnp.float32),
        topk_logprobs=jnp.asarray(-np.sort(-logp_all, axis=-1)[..., :k], jnp.float32),
    )
    return rollout, stats, logp_all, picked


def numpy_curvature(logp_all, picked, adv, s, k=V):
    """The official top-k linear-logit model, with explicit vectors: π̃ the
    policy renormalised over its k most likely tokens, v = e_y − π̃ (e_y = 0
    when y is not among them) and F = diag(π̃) − π̃π̃ᵀ."""
    top = np.argsort(-logp_all, axis=-1)[..., :k]
    pi = np.exp(np.take_along_axis(logp_all, top, -1))
    pi = pi / pi.sum(-1, keepdims=True)
    v = (top == picked[..., None]).astype(np.float64) - pi
    fisher = np.einsum("btu,uw->btuw", pi, np.eye(k)) - pi[..., :, None] * pi[..., None, :]
    v_sq = np.sum(v * v, -1)
    v_f_v = np.einsum("btu,btuw,btw->bt", v, fisher, v)
    kl = 0.5 * (s * adv * v_sq) ** 2
    update = s * adv ** 2 * v_sq + 0.5 * s ** 2 * adv ** 3 * (v_sq ** 2 - v_f_v)
    return kl, update


@given(st.integers(0, 2**16), st.floats(0.001, 0.1), st.sampled_from([V, 3, 1]))
def test_curvature_matches_the_explicit_top_k_model(seed, s, k):
    """Exact over the full vocabulary (k = V) and the official renormalised
    top-k subspace otherwise, including sampled tokens outside it."""
    rollout, stats, logp_all, picked = full_vocab_batch(seed, k)
    adv = np.random.default_rng(seed + 1).normal(0, 1.5, (B, T))
    kl, update = curvature(stats.logprobs, stats.topk_logprobs, jnp.asarray(adv, jnp.float32), s)
    want_kl, want_update = numpy_curvature(logp_all, picked, adv, s, k)
    np.testing.assert_allclose(kl, want_kl, rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(update, want_update, rtol=1e-3, atol=1e-8)


@given(st.integers(0, 2**16))
def test_infinite_thresholds_is_grpo(seed):
    rollout, stats = random_batch(seed, B, T, K)
    cfg = CAPO.Config(fisher_tau=None, hessian_tau=None)
    loss, metrics, grads = loss_and_grad(CAPO, cfg, stats, rollout)
    base_loss, _, base = loss_and_grad(GRPO, GRPO.Config(kl_coef=0.0, std_eps=1e-4), stats, rollout)
    np.testing.assert_allclose(loss, base_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, base.logprobs, rtol=1e-5, atol=1e-8)
    assert metrics["capo_masked_frac"] == 0


@given(st.integers(0, 2**16), taus, taus, st.floats(1.0, 100.0))
def test_masked_fraction_shrinks_as_thresholds_grow(seed, fisher, hessian, factor):
    rollout, stats, _, _ = full_vocab_batch(seed)
    tight = CAPO.Config(fisher_tau=fisher, hessian_tau=hessian, logit_step=0.05)
    loose = CAPO.Config(
        fisher_tau=None if fisher is None else fisher * factor,
        hessian_tau=None if hessian is None else hessian * factor,
        logit_step=0.05,
    )
    _, m_tight, _ = loss_and_grad(CAPO, tight, stats, rollout)
    _, m_loose, _ = loss_and_grad(CAPO, loose, stats, rollout)
    assert m_loose["capo_masked_frac"] <= m_tight["capo_masked_frac"] + 1e-7


@given(st.integers(0, 2**16), st.sampled_from([V, 3]))
def test_mask_is_the_explicit_model_rule(seed, k):
    """A token is kept iff KL̂ < τ_F and |Ĵ| < τ_H (symmetric Hessian clipping)."""
    rollout, stats, logp_all, picked = full_vocab_batch(seed, k)
    cfg = CAPO.Config(logit_step=0.05)
    adv, _ = CAPO.advantages(rollout, cfg, ())
    keep = np.asarray(keep_mask(stats.logprobs, stats.topk_logprobs, adv, cfg))
    kl, update = numpy_curvature(logp_all, picked, np.asarray(adv, np.float64), cfg.logit_step, k)
    want = (kl < cfg.fisher_tau) & (np.abs(update) < cfg.hessian_tau)
    # Tokens within float32 rounding of a threshold are not compared.
    clear = (np.abs(kl - cfg.fisher_tau) > 1e-3 * cfg.fisher_tau) & (
        np.abs(np.abs(update) - cfg.hessian_tau) > 1e-3 * cfg.hessian_tau
    )
    mask = np.asarray(rollout.loss_mask)
    assert 0 < want[mask].mean() < 1
    np.testing.assert_array_equal(keep[clear & mask], want[clear & mask])


@given(st.integers(0, 2**16), st.sampled_from(["seq-mean-token-mean", "token-mean"]))
def test_loss_is_grpo_on_the_kept_tokens(seed, aggregation):
    """The official `_compute_final_loss`: the curvature mask is folded into the
    completion mask, so each row is averaged over its kept tokens only (a row
    with none contributes 0 but still counts); masked tokens get no gradient.
    Under the default aggregation every kept token's GRPO gradient is rescaled
    by L_b / L'_b."""
    rollout, stats, _, _ = full_vocab_batch(seed)
    cfg = CAPO.Config(logit_step=0.05, aggregation=aggregation)
    adv, _ = CAPO.advantages(rollout, cfg, ())
    keep = keep_mask(stats.logprobs, stats.topk_logprobs, adv, cfg)
    loss, _, grads = loss_and_grad(CAPO, cfg, stats, rollout)
    grpo_cfg = GRPO.Config(kl_coef=0.0, std_eps=1e-4, aggregation=aggregation)
    # The whole batch's counts are those of all trained tokens, as in CAPO.
    kept = rollout.with_normaliser().replace(loss_mask=rollout.loss_mask & keep)
    want_loss, _, want = loss_and_grad(GRPO, grpo_cfg, stats, kept, adv=adv)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, want.logprobs, rtol=1e-5, atol=1e-8)
    mask, keep = np.asarray(rollout.loss_mask), np.asarray(keep)
    assert np.all(np.asarray(grads.logprobs)[mask & ~keep] == 0)
    if aggregation == "seq-mean-token-mean":
        _, _, base = loss_and_grad(GRPO, grpo_cfg, stats, rollout)
        lengths, kept_lengths = mask.sum(1, keepdims=True), (mask & keep).sum(1, keepdims=True)
        scale = lengths / np.maximum(kept_lengths, 1)
        on = mask & keep
        np.testing.assert_allclose(
            np.asarray(grads.logprobs)[on], (np.asarray(base.logprobs) * scale)[on], rtol=1e-5, atol=1e-8
        )


@given(st.integers(0, 2**16), st.sampled_from(["seq-mean-token-mean", "token-mean"]))
def test_microbatches_add_up_in_every_aggregation(seed, aggregation):
    """The mask is per token, and the whole-minibatch counts are frozen from all
    trained tokens, so two microbatches (one group each) add up exactly."""
    pieces = 2
    rollout, stats, _, _ = full_vocab_batch(seed)
    cfg = CAPO.Config(logit_step=0.05, aggregation=aggregation)
    adv, _ = CAPO.advantages(rollout, cfg, ())
    loss, _, grads = loss_and_grad(CAPO, cfg, stats, rollout)
    rows = B // pieces
    total, parts = 0.0, []
    for i, micro in enumerate(rollout.microbatches(pieces)):
        sl = slice(i * rows, (i + 1) * rows)
        part, _, g = loss_and_grad(CAPO, cfg, jax.tree.map(lambda x: x[sl], stats), micro, adv=adv[sl])
        total += float(part)
        parts.append(np.asarray(g.logprobs))
    np.testing.assert_allclose(total, loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.concatenate(parts), grads.logprobs, rtol=1e-5, atol=1e-8)


def test_record_declares_its_top_k():
    """CAPO reads the policy's top-k log-probs; the record says how many (the trainer's 4)."""
    cfg = CAPO.Config()
    assert "topk_logprobs" in CAPO.required(cfg)
    assert CAPO.topk_size(cfg) == 4


@pytest.mark.parametrize("overrides, message", [
    ({"clip_eps_low": -1.0}, "capo: --clip-eps-low must be >= 0.0; got -1.0"),
    ({"fisher_tau": 0.0}, "capo: --fisher-tau must be > 0.0"),
    ({"hessian_tau": -0.01}, "capo: --hessian-tau must be > 0.0"),
    ({"logit_step": 0.0}, "capo: --logit-step must be > 0.0"),
    ({"std_eps": 0.0}, "capo: --std-eps must be > 0.0"),
    ({"aggregation": "mean"}, "capo: --aggregation must be one of"),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        CAPO.Config(**overrides)
