"""token_stats (chunked, rematerialised) against the plain full-logits
reference (`token_logprobs`, `token_entropy`): values, gradients, and that it
never allocates [B, T, V] float32 logits; the reference against a loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, strategies as st

from rlzoo.policy import Transformer, chunked_head_stats, token_stats
from rlzoo.policy.stats import token_entropy, token_logprobs

B, T = 3, 21  # T not a multiple of the chunk size


@pytest.fixture(scope="module")
def model_and_tokens(tiny_cfg):
    model = Transformer(tiny_cfg.replace(value_head=True), rngs=nnx.Rngs(3))
    model.value_head.kernel[...] = jax.random.normal(jax.random.key(1), model.value_head.kernel[...].shape)
    tokens = jax.random.randint(jax.random.key(2), (B, T), 0, tiny_cfg.vocab_size)
    return model, tokens


def _reference(model, tokens, temperature):
    """Independent reference: full logits, then the plain token_logprobs /
    token_entropy and a direct top-k."""
    h = model.hidden(tokens)
    logits = model.logits(h) / temperature
    logp = jax.nn.log_softmax(logits, axis=-1)
    top = jax.lax.top_k(logp, 4)[0]
    values = model.values(h)
    return {
        "logprobs": token_logprobs(logits, tokens),
        "entropy": token_entropy(logits),
        "topk_logprobs": jnp.pad(top[:, :-1], ((0, 0), (1, 0), (0, 0))),
        "values": jnp.pad(values[:, :-1], ((0, 0), (1, 0))),
    }


@pytest.mark.parametrize("temperature,chunk", [(1.0, 4), (0.7, 8), (1.3, 64)])
def test_token_stats_equal_full_logits_reference(model_and_tokens, temperature, chunk):
    model, tokens = model_and_tokens
    graphdef, state = nnx.split(model)

    @jax.jit
    def both(state):
        m = nnx.merge(graphdef, state)
        stats = token_stats(m, tokens, entropy=True, values=True, topk=4, temperature=temperature, chunk_size=chunk)
        return stats, _reference(m, tokens, temperature)

    stats, ref = both(state)
    for name in ("logprobs", "entropy", "topk_logprobs", "values"):
        np.testing.assert_allclose(getattr(stats, name), ref[name], atol=1e-5, rtol=0, err_msg=name)
    assert np.all(np.asarray(stats.logprobs)[:, 0] == 0)
    assert stats.logprobs.shape == (B, T) and stats.topk_logprobs.shape == (B, T, 4)


def test_token_stats_gradient_equals_reference_gradient(tiny_cfg):
    # One layer (cheap to compile), tied embeddings: W_emb gets gradient through both ends.
    cfg = tiny_cfg.replace(num_layers=1, tie_embeddings=True, value_head=True)
    model = Transformer(cfg, rngs=nnx.Rngs(3))
    model.value_head.kernel[...] = jax.random.normal(jax.random.key(1), model.value_head.kernel[...].shape)
    tokens = jax.random.randint(jax.random.key(2), (B, T), 0, cfg.vocab_size)
    graphdef, state = nnx.split(model)
    weights = jax.random.normal(jax.random.key(5), (B, T))

    def loss(state, chunked):
        m = nnx.merge(graphdef, state)
        if chunked:
            s = token_stats(m, tokens, entropy=True, values=True, chunk_size=4)
            lp, ent, val = s.logprobs, s.entropy, s.values
        else:
            ref = _reference(m, tokens, 1.0)
            lp, ent, val = ref["logprobs"], ref["entropy"], ref["values"]
        return jnp.sum(weights * lp) + 0.1 * jnp.sum(ent) + 0.5 * jnp.sum(jnp.square(val))

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    chunked, plain = grad(state, True), grad(state, False)
    for a, b in zip(jax.tree.leaves(chunked), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=2e-3)  # float32 summation order
    assert any(np.abs(np.asarray(a)).max() > 0 for a in jax.tree.leaves(chunked))


def test_chunked_head_never_holds_full_logits():
    """Compiled temp memory of the gradient: chunked stays below the size of
    one float32 [B, T, V] array and below 1/4 of the plain version's."""
    b, t, d, v = 2, 256, 32, 2048
    full_bytes = b * t * v * 4
    h = jax.ShapeDtypeStruct((b, t, d), jnp.float32)
    w = jax.ShapeDtypeStruct((d, v), jnp.float32)
    y = jax.ShapeDtypeStruct((b, t), jnp.int32)

    def chunked(h, w, y):
        return jnp.sum(chunked_head_stats(h, w, y, chunk_size=16)["logprobs"])

    def plain(h, w, y):
        logp = jax.nn.log_softmax(jnp.dot(h, w), axis=-1)
        return jnp.sum(jnp.take_along_axis(logp, y[..., None], axis=-1))

    def temp(fn):
        compiled = jax.jit(jax.grad(fn, argnums=(0, 1))).lower(h, w, y).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    plain_bytes, chunked_bytes = temp(plain), temp(chunked)
    assert plain_bytes >= full_bytes
    assert chunked_bytes < full_bytes / 2
    assert chunked_bytes <= plain_bytes / 4


def test_bfloat16_model_gives_float32_logits_and_stats(tiny_cfg):
    model = Transformer(tiny_cfg.replace(param_dtype="bfloat16", dtype="bfloat16"), rngs=nnx.Rngs(0))
    assert model.layers[0].attn.q_proj.kernel[...].dtype == jnp.bfloat16
    tokens = jnp.arange(2 * 9).reshape(2, 9) % tiny_cfg.vocab_size
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state):
        m = nnx.merge(graphdef, state)
        return m(tokens), token_stats(m, tokens, entropy=True, chunk_size=4)

    logits, stats = run(state)
    assert logits.dtype == jnp.float32
    assert stats.logprobs.dtype == jnp.float32 and stats.entropy.dtype == jnp.float32
    np.testing.assert_allclose(stats.logprobs, token_logprobs(logits, tokens), atol=1e-5)
    assert np.all(np.isfinite(np.asarray(stats.logprobs))) and np.all(np.asarray(stats.logprobs) <= 0)


@given(st.integers(0, 2**16))
def test_token_logprobs_and_entropy_match_loop(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (2, 5, 7)).astype(np.float32)
    tokens = rng.integers(0, 7, (2, 5))
    lp = np.asarray(token_logprobs(jnp.asarray(logits), jnp.asarray(tokens)))
    ent = np.asarray(token_entropy(jnp.asarray(logits)))
    for b in range(2):
        assert lp[b, 0] == 0 and ent[b, 0] == 0
        for t in range(1, 5):
            z = logits[b, t - 1].astype(np.float64)
            logp = z - np.log(np.exp(z - z.max()).sum()) - z.max()
            np.testing.assert_allclose(lp[b, t], logp[tokens[b, t]], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(ent[b, t], -(np.exp(logp) * logp).sum(), rtol=1e-5, atol=1e-6)


def test_token_logprobs_and_entropy_jit_match_eager():
    logits = jax.random.normal(jax.random.key(0), (2, 6, 5)) * 2
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, 5)
    both = lambda x, y: (token_logprobs(x, y), token_entropy(x))  # noqa: E731
    for a, b in zip(both(logits, tokens), jax.jit(both)(logits, tokens)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(AssertionError):
        token_logprobs(logits, tokens[:, :-1])
