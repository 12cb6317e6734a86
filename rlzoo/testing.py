"""Helpers for property tests of algorithms: random rollouts with every
optional field filled, and the loss-and-gradient pipeline the trainer runs.

Used by the zoo's own tests and meant for users who add an algorithm:

    rollout, stats = random_batch(seed=0, batch=16, length=12, group_size=4)
    loss, metrics, grads = loss_and_grad(get_algorithm("grpo"), cfg, stats, rollout)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlzoo import ops
from rlzoo.registry import Algorithm, get_algorithm
from rlzoo.rollout import PolicyStats, Rollout, make_rollout


def random_batch(
    seed: int,
    batch: int = 16,
    length: int = 12,
    group_size: int = 4,
    vocab: int = 32,
    num_components: int = 2,
    *,
    extreme: bool = False,
    masked_rows: tuple[int, ...] = (),
    equal_reward_groups: tuple[int, ...] = (),
    binary_rewards: bool = False,
) -> tuple[Rollout, PolicyStats]:
    """A random Rollout and PolicyStats of the given shape, every optional field set.

    Rows of a group share a prompt length; responses have random lengths and
    sometimes an untrained gap (tool output) inside. Current log-probs are
    the behaviour log-probs plus noise, so some ratios clip. `extreme` mixes
    in log-probs near 0 and near −60; `masked_rows` get an empty loss mask;
    `equal_reward_groups` get one reward for all their rows.
    """
    rng = np.random.default_rng(seed)
    groups = batch // group_size
    tokens = rng.integers(0, vocab, (batch, length))
    mask = np.zeros((batch, length), bool)
    for g in range(groups):
        prompt = int(rng.integers(1, max(2, length // 3)))
        for row in range(g * group_size, (g + 1) * group_size):
            end = int(rng.integers(prompt + 1, length + 1))
            mask[row, prompt:end] = True
            if end - prompt > 4 and rng.random() < 0.3:
                gap = int(rng.integers(prompt + 1, end - 2))
                mask[row, gap:gap + 2] = False
    mask[list(masked_rows)] = False

    def logprobs(scale: float) -> np.ndarray:
        values = -rng.exponential(scale, (batch, length))
        if extreme:
            pick = rng.random((batch, length))
            values = np.where(pick < 0.15, -60.0 + rng.random((batch, length)), values)
            values = np.where(pick > 0.85, -1e-7, values)
        return values

    behaviour = logprobs(1.5)
    current = np.minimum(behaviour + rng.normal(0, 0.3, (batch, length)), 0.0)
    if extreme:
        current = np.where(rng.random((batch, length)) < 0.1, -60.0, current)
    ref = np.minimum(behaviour + rng.normal(0, 0.3, (batch, length)), 0.0)
    if binary_rewards:
        rewards = rng.integers(0, 2, batch).astype(float)
    else:
        rewards = rng.normal(0, 1, batch)
    for g in equal_reward_groups:
        rewards[g * group_size:(g + 1) * group_size] = rewards[g * group_size]
    segment_ids = np.cumsum(rng.random((batch, length)) < 0.25, axis=1)
    rollout = make_rollout(
        tokens, mask, rewards, np.where(mask, behaviour, 0.0),
        group_size=group_size,
        ref_logprobs=np.where(mask, ref, 0.0),
        reward_components=rng.normal(0, 1, (batch, num_components)),
        prompt_ids=np.repeat(np.arange(groups), group_size),
        is_expert=np.zeros(batch, bool),
        policy_version=np.zeros(batch, np.int32),
        old_values=rng.normal(0, 1, (batch, length)),
        segment_ids=segment_ids,
        sample_entropy=rng.exponential(1.0, (batch, length)),
        inference_logprobs=np.where(mask, behaviour + rng.normal(0, 0.05, (batch, length)), 0.0),
        truncated=rng.random(batch) < 0.2,
        answer_ids=rng.integers(-1, 3, batch),
        old_topk_logprobs=-np.sort(rng.exponential(2.0, (batch, length, 4)), axis=-1),
    )
    topk = -np.sort(rng.exponential(2.0, (batch, length, 4)), axis=-1)
    stats = PolicyStats(
        logprobs=jnp.asarray(current, jnp.float32),
        entropy=jnp.asarray(rng.exponential(1.0, (batch, length)), jnp.float32),
        values=jnp.asarray(rng.normal(0, 1, (batch, length)), jnp.float32),
        topk_logprobs=jnp.asarray(topk, jnp.float32),
    )
    return rollout.replace(**_turn_fields(rng, mask, rewards)), stats


def _turn_fields(rng: np.random.Generator, mask: np.ndarray, rewards: np.ndarray) -> dict[str, jnp.ndarray]:
    """Turn fields consistent with `mask`: each run of trained tokens is one
    policy turn (a gap in a response is an observation between two turns);
    turn rewards add up to the row's reward; state keys from a small set,
    so some states repeat across rows."""
    batch = mask.shape[0]
    starts = mask & ~np.pad(mask, ((0, 0), (1, 0)))[:, :-1]
    turn_ids = np.where(mask, np.cumsum(starts, axis=1), 0)
    num_turns = turn_ids.max(axis=1)
    slots = max(2, int(num_turns.max()))
    turn_rewards = np.zeros((batch, slots))
    split = rng.normal(0, 1, batch)
    for row, n in enumerate(num_turns):
        if n:
            turn_rewards[row, :n - 1] = split[row] / max(n - 1, 1)
            turn_rewards[row, n - 1] = rewards[row] - turn_rewards[row, :n - 1].sum()
    state_keys = np.where(np.arange(slots)[None] < num_turns[:, None], rng.integers(0, 3, (batch, slots)), -1)
    return {
        "turn_ids": jnp.asarray(turn_ids, jnp.int32), "num_turns": jnp.asarray(num_turns, jnp.int32),
        "turn_rewards": jnp.asarray(turn_rewards, jnp.float32), "state_keys": jnp.asarray(state_keys, jnp.int32),
    }


def loss_and_grad(
    algo: Algorithm,
    cfg: Any,
    stats: PolicyStats,
    rollout: Rollout,
    state: Any = None,
    adv: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array], PolicyStats]:
    """advantages -> loss -> gradient with respect to the PolicyStats.

    `state` defaults to `algo.init_state(cfg)`; `adv` to the algorithm's own
    advantages of `rollout` (pass the whole-batch advantages when `rollout`
    is a microbatch)."""
    if state is None:
        state = algo.init_state(cfg)
    if adv is None:
        adv, state = algo.advantages(rollout, cfg, state)

    def objective(s: PolicyStats):
        return algo.loss(s, rollout, adv, cfg, state)

    (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(stats)
    return loss, metrics, grads


def reinforce_gradient(rollout: Rollout, adv: jax.Array, aggregation: str) -> jax.Array:
    """[B, T]: the gradient with respect to the current log-probs of the
    REINFORCE loss −Σ w_t A_t log π(y_t) under `aggregation`, i.e. −w·A.

    Every ratio-based loss must produce exactly this on-policy (behaviour
    log-probs equal to the current ones) with no clipping active."""
    return -ops.token_weights(rollout, aggregation) * adv


def on_policy(rollout: Rollout, stats: PolicyStats) -> Rollout:
    """The rollout with behaviour log-probs equal to the current ones (ratio 1)."""
    return rollout.replace(
        behaviour_logprobs=jnp.where(rollout.loss_mask, stats.logprobs, 0.0)
    )


def chosen_rejected_rows(rollout: Rollout) -> tuple[np.ndarray, np.ndarray]:
    """For groups of two rows: the row index of each pair's chosen (higher
    reward; the second row on a tie) and rejected response."""
    rewards = np.asarray(rollout.rewards).reshape(-1, 2)
    chosen = np.where(rewards[:, 0] > rewards[:, 1], 0, 1) + 2 * np.arange(len(rewards))
    return chosen, chosen ^ 1


def compiled(algo: Algorithm | str, cfg: Any):
    """The jitted (stats, rollout, adv, state=None) -> (loss, metrics, grads)
    of `loss_and_grad` for one algorithm (a record or a registered name) and
    config, so property tests run the program the trainer compiles."""
    if isinstance(algo, str):
        algo = get_algorithm(algo)
    return jax.jit(lambda stats, rollout, adv=None, state=None: loss_and_grad(algo, cfg, stats, rollout, state=state, adv=adv))


def off_policy(seed: int, scale: float, batch: int = 16, length: int = 12, group_size: int = 4,
               noise_seed_offset: int = 7) -> tuple[Rollout, PolicyStats]:
    """`random_batch` whose current log-probs differ from the behaviour ones by
    Gaussian noise of std `scale` on the trained tokens, so ratios move away
    from 1 by a controlled amount (scale 0: exactly on-policy there)."""
    rollout, stats = random_batch(seed, batch, length, group_size)
    noise = np.random.default_rng(seed + noise_seed_offset).normal(0, scale, (batch, length))
    logp = np.where(rollout.loss_mask, np.asarray(rollout.behaviour_logprobs) + noise, np.asarray(stats.logprobs))
    return rollout, stats.replace(logprobs=jnp.asarray(logp, jnp.float32))


def assert_variants(fn, *args, expected, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """rlax-style variant test: `fn(*args)` run eagerly and under `jax.jit`
    both equal `expected` (a pytree of arrays; integer and boolean leaves
    exactly, float leaves within rtol / atol)."""

    def close(got, want, variant):
        got, want = np.asarray(got), np.asarray(want)
        assert got.shape == want.shape, f"{variant}: shape {got.shape} != {want.shape}"
        if want.dtype.kind in "biu":
            np.testing.assert_array_equal(got, want, err_msg=variant)
        else:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=variant)

    for variant, run in (("eager", fn), ("jit", jax.jit(fn))):
        jax.tree.map(lambda g, w: close(g, w, variant), run(*args), expected)


def first_trained_token(rollout: Rollout) -> np.ndarray:
    """[B, T] bool: True at each row's first trained token (position 0 for a
    row with none, which the loss mask excludes), where a row-level
    log-ratio shift is placed."""
    mask = np.asarray(rollout.loss_mask)
    first = np.zeros_like(mask)
    first[np.arange(mask.shape[0]), mask.argmax(1)] = True
    return first
