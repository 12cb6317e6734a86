"""The KV-cache sampler against full re-forwards, token_stats and the exact
top-k / top-p distribution."""

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlzoo.policy import token_stats
from rlzoo.rollout import validate
from rlzoo.sampling import (
    Sampler, bucket_length, categorical_inverse_cdf, inverse_cdf_index, response_tokens, sample,
)

PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18], [3]]
PAD = 0
NEW = 7


def _greedy_reference(forward, prompts, steps):
    """Step-by-step argmax over full re-forwards (right-padded buffer, causal)."""
    out = []
    for prompt in prompts:
        buffer = np.full((1, len(prompt) + steps), PAD, np.int32)
        buffer[0, :len(prompt)] = prompt
        for i in range(steps):
            pos = len(prompt) + i
            buffer[0, pos] = int(np.argmax(np.asarray(forward(jnp.asarray(buffer)))[0, pos - 1]))
        out.append(buffer[0, len(prompt):].tolist())
    return out


@pytest.fixture(scope="module")
def greedy(tiny_model, tiny_forward):
    sampler = Sampler()
    rollout = sampler(tiny_model, PROMPTS, num_samples=2, max_new_tokens=NEW, rng=jax.random.key(0),
                      temperature=0.0, eos_id=tiny_model.cfg.vocab_size, pad_id=PAD)
    return sampler, rollout, _greedy_reference(tiny_forward, PROMPTS, NEW)


def test_greedy_kv_cache_decoding_equals_full_reforward_argmax(greedy):
    _, rollout, reference = greedy
    responses = response_tokens(rollout)
    assert responses == [r for r in reference for _ in range(2)]
    assert np.all(np.asarray(rollout.truncated))


def test_layout_prompt_major_right_padded(greedy):
    _, rollout, reference = greedy
    tokens, mask = np.asarray(rollout.tokens), np.asarray(rollout.loss_mask)
    assert rollout.group_size == 2 and tokens.shape[0] == 6
    for row in range(6):
        prompt = PROMPTS[row // 2]
        n = len(prompt)
        assert tokens[row, :n].tolist() == prompt
        assert tokens[row, n:n + NEW].tolist() == reference[row // 2]
        assert np.all(tokens[row, n + NEW:] == PAD)
        assert mask[row].tolist() == [False] * n + [True] * NEW + [False] * (tokens.shape[1] - n - NEW)
    validate(rollout)
    assert np.all(np.asarray(rollout.rewards) == 0)


def test_eos_stops_rows_and_masks_include_it(greedy, tiny_model):
    """Take a token the greedy run produced mid-way as the end token: each row
    must stop at its first occurrence, keep it trained, and pad after it."""
    sampler, _, reference = greedy
    eos = reference[0][2]
    rollout = sampler(tiny_model, PROMPTS, num_samples=2, max_new_tokens=NEW, rng=jax.random.key(0),
                      temperature=0.0, eos_id=eos, pad_id=PAD)
    tokens, mask = np.asarray(rollout.tokens), np.asarray(rollout.loss_mask)
    logp = np.asarray(rollout.behaviour_logprobs)
    for row in range(6):
        prompt, full = PROMPTS[row // 2], reference[row // 2]
        expected = full[:full.index(eos) + 1] if eos in full else full
        n, k = len(prompt), len(expected)
        assert tokens[row, :n + k].tolist() == prompt + expected
        assert np.all(tokens[row, n + k:] == PAD)
        assert np.flatnonzero(mask[row]).tolist() == list(range(n, n + k))
        assert np.all(logp[row, ~mask[row]] == 0) and np.all(logp[row, mask[row]] < 0)
        assert bool(rollout.truncated[row]) == (eos not in full)
        assert response_tokens(rollout)[row] == [t for t in expected if t != eos]
        assert response_tokens(rollout, keep_eos=True)[row] == expected
    assert not np.all(np.asarray(rollout.truncated))
    assert sampler.num_compilations == 1  # same shapes and settings as the fixture's call


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_behaviour_logprobs_equal_token_stats(tiny_model, temperature):
    # (test_sharding repeats this call at temperature 1 on the mesh: same compilation)
    rollout = sample(tiny_model, PROMPTS, num_samples=4, max_new_tokens=NEW, rng=jax.random.key(1),
                     temperature=temperature, eos_id=1, pad_id=PAD)
    graphdef, state = nnx.split(tiny_model)
    stats = jax.jit(lambda s, t: token_stats(nnx.merge(graphdef, s), t, temperature=temperature))(
        state, rollout.tokens)
    mask = np.asarray(rollout.loss_mask)
    np.testing.assert_allclose(np.asarray(rollout.behaviour_logprobs)[mask], np.asarray(stats.logprobs)[mask],
                               atol=1e-5, rtol=0)
    # Samples of one prompt differ (they are samples, not copies).
    tokens = np.asarray(rollout.tokens)
    assert any(not np.array_equal(tokens[4 * g], tokens[4 * g + 1]) for g in range(3))


def _truncated_distribution(logits, top_k, top_p):
    """Reference sampling distribution (numpy, float64): top-k, then top-p as
    in HF's TopPLogitsWarper (drop the tokens whose cumulative ascending
    mass is <= 1 - p, keep at least one)."""
    logits = np.asarray(logits, np.float64)
    keep = np.ones_like(logits, bool)
    if top_k:
        keep &= logits >= np.sort(logits)[-top_k]
    masked = np.where(keep, logits, -np.inf)
    probs = np.exp(masked - masked.max())
    probs /= probs.sum()
    if top_p < 1:
        order = np.argsort(probs)  # ascending
        cumulative = np.cumsum(probs[order])
        remove = cumulative <= 1 - top_p
        remove[-1] = False
        probs[order[remove]] = 0
        probs /= probs.sum()
    return probs


# 99.9% quantiles of the chi-square distribution by degrees of freedom.
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32, 8: 26.12, 9: 27.88,
            10: 29.59, 11: 31.26}


@pytest.mark.parametrize("top_k,top_p", [(5, 1.0), (0, 0.6), (6, 0.8)])
def test_sampled_frequencies_match_top_k_top_p(small_vocab_model, top_k, top_p):
    prompt, n, temperature = [3, 1, 4], 6000, 0.9
    rollout = sample(small_vocab_model, [prompt], num_samples=n, max_new_tokens=1, rng=jax.random.key(7),
                     temperature=temperature, top_k=top_k, top_p=top_p, eos_id=99, pad_id=0)
    drawn = np.asarray(rollout.tokens)[:, len(prompt)]
    logits = np.asarray(small_vocab_model(jnp.asarray([prompt])))[0, -1] / temperature
    expected = _truncated_distribution(logits, top_k, top_p)
    support = expected > 0
    assert 2 < support.sum() < len(expected)  # the truncation bites and leaves a choice
    counts = np.bincount(drawn, minlength=len(expected))
    assert counts[~support].sum() == 0
    chi2 = np.sum((counts[support] - n * expected[support]) ** 2 / (n * expected[support]))
    assert chi2 < CHI2_999[int(support.sum()) - 1], (counts, n * expected)
    # Behaviour log-probs are those of the truncated distribution actually sampled from.
    np.testing.assert_allclose(np.asarray(rollout.behaviour_logprobs)[:, len(prompt)],
                               np.log(expected[drawn]), atol=1e-5)


def test_buckets_avoid_recompilation(small_vocab_model):
    sampler = Sampler(min_bucket=8)
    for prompts in ([[1, 2]], [[1, 2, 3, 4, 5]], [[7] * 8]):
        rollout = sampler(small_vocab_model, prompts, num_samples=2, max_new_tokens=3, rng=jax.random.key(0),
                          eos_id=1, pad_id=PAD)
        assert rollout.tokens.shape == (2, 8 + 3)
    assert sampler.num_compilations == 1
    sampler(small_vocab_model, [[1] * 9], num_samples=2, max_new_tokens=3, rng=jax.random.key(0), eos_id=1, pad_id=PAD)
    assert sampler.num_compilations == 2
    assert [bucket_length(n, 16) for n in (1, 16, 17, 100)] == [16, 16, 32, 128]
    assert bucket_length(40, buckets=(24, 48, 96)) == 48


def test_input_errors(tiny_model):
    with pytest.raises(ValueError, match="at least one token"):
        sample(tiny_model, [[1], []], num_samples=1, max_new_tokens=2, rng=jax.random.key(0), eos_id=1, pad_id=0)
    with pytest.raises(ValueError, match="token ids"):
        sample(tiny_model, [[1, 10_000]], num_samples=1, max_new_tokens=2, rng=jax.random.key(0), eos_id=1, pad_id=0)


@hypothesis.given(
    logits=hnp.arrays(np.float32, (8,), elements=st.floats(-6, 6, width=32)),
    keep=hnp.arrays(bool, (8,)),
)
def test_inverse_cdf_draws_follow_the_distribution(logits, keep):
    """categorical_inverse_cdf: zero-probability tokens are never drawn, and
    the frequencies of 4000 draws pass a chi-square test against μ."""
    keep[np.argmax(logits)] = True
    logq = jax.nn.log_softmax(jnp.where(jnp.asarray(keep), jnp.asarray(logits), -jnp.inf))
    n = 4000
    draws = np.asarray(_draw_many(jax.random.key(int(np.abs(logits).sum() * 1000) % 2**31),
                                  jnp.broadcast_to(logq, (n, 8))))
    expected = np.asarray(jnp.exp(logq))
    counts = np.bincount(draws, minlength=8)
    assert counts[~keep].sum() == 0
    # The chi-square approximation wants >= 5 expected counts per cell: pool
    # the rare tokens into one cell, or into the likeliest token if still rare.
    big = expected * n >= 5
    observed, wanted = list(counts[big]), list(n * expected[big])
    rest_count, rest_expected = counts[~big].sum(), n * expected[~big].sum()
    if rest_expected >= 5:
        observed.append(rest_count), wanted.append(rest_expected)
    else:
        top = int(np.argmax(wanted))
        observed[top] += rest_count
        wanted[top] += rest_expected
    observed, wanted = np.asarray(observed), np.asarray(wanted)
    if len(observed) >= 2:
        chi2 = np.sum((observed - wanted) ** 2 / wanted)
        assert chi2 < CHI2_999[len(observed) - 1], (counts, n * expected)


_draw_many = jax.jit(categorical_inverse_cdf)


def test_inverse_cdf_edges_stay_on_the_support():
    logq = jnp.log(jnp.asarray([[0.0, 0.5, 0.0, 0.5, 0.0, 0.0]] * 3))
    u = jnp.asarray([0.0, 0.5 - 1e-6, 1.0])  # 1.0 lies past [0, 1): rounding can get there
    assert np.asarray(inverse_cdf_index(u, logq)).tolist() == [1, 1, 3]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_decode_segments_change_nothing(tiny_model, monkeypatch, temperature):
    """Decoding in segments over a growing cache (here 3 + 3 + 1 new tokens)
    gives the tokens and log-probs of one loop over the full cache."""
    import rlzoo.sampling as sampling

    def run():
        return Sampler()(tiny_model, PROMPTS, num_samples=2, max_new_tokens=NEW, rng=jax.random.key(3),
                         temperature=temperature, eos_id=tiny_model.cfg.vocab_size, pad_id=PAD)

    whole = run()
    monkeypatch.setattr(sampling, "DECODE_SEGMENT", 3)
    assert sampling.decode_segment_ends(NEW) == (3, 6, 7)
    segmented = run()
    np.testing.assert_array_equal(np.asarray(segmented.tokens), np.asarray(whole.tokens))
    np.testing.assert_allclose(np.asarray(segmented.behaviour_logprobs), np.asarray(whole.behaviour_logprobs),
                               atol=1e-5)


def test_decode_segment_ends():
    from rlzoo.sampling import DECODE_SEGMENT, MAX_DECODE_SEGMENTS, decode_segment_ends
    for n in (1, DECODE_SEGMENT - 1, DECODE_SEGMENT, DECODE_SEGMENT + 1, 5 * DECODE_SEGMENT + 3, 10**5):
        ends = decode_segment_ends(n)
        assert ends[-1] == n and list(ends) == sorted(set(ends)) and len(ends) <= MAX_DECODE_SEGMENTS
        assert len(ends) == 1 or all(b - a == ends[0] for a, b in zip(ends, ends[1:-1]))
