"""The multi-turn episode runner: the token layout of each row, the turn
fields, truncation at the limits, and the behaviour log-probs against a
full re-forward of the finished streams."""

import jax
import numpy as np
import pytest
from flax import nnx

from rlzoo.envs import EnvError, Step, state_hash
from rlzoo.experience.episodes import EpisodeSettings, observation_tokens, run_episodes
from rlzoo.experience.generation import SamplingSettings
from rlzoo.policy import PRESETS, Transformer, token_stats
from rlzoo.sampling import Sampler
from rlzoo.tokenizers import ByteTokenizer

TOKENIZER = ByteTokenizer()


class Countdown:
    """Ends after `length` turns (seed % 3 + 1 by default); reward = turn number / 10;
    the state is the number of turns left."""

    name = "countdown"

    def __init__(self, length=None, fail_at=None):
        self.length, self.fail_at = length, fail_at

    def reset(self, seed):
        self.left = self.length if self.length is not None else seed % 3 + 1
        self.turn = 0
        return f"count {self.left}", {"state_key": self.left}

    def step(self, action):
        self.turn += 1
        if self.turn == self.fail_at:
            raise RuntimeError("the simulator crashed")
        self.left -= 1
        return Step(f"left {self.left}", self.turn / 10, self.left == 0, {"state_key": self.left})


@pytest.fixture(scope="module")
def model():
    return Transformer(PRESETS["tiny"].replace(init_std=0.1), rngs=nnx.Rngs(1))


SAMPLING = SamplingSettings(max_new_tokens=6, temperature=1.0)


def run(model, make_env, seeds, settings, k=2, sampler=None):
    return run_episodes(sampler or Sampler(), model, TOKENIZER, False, make_env, seeds, k, jax.random.key(0),
                        SAMPLING, settings)


def test_layout_turn_fields_and_logprobs(model):
    settings = EpisodeSettings(max_turns=4, max_turn_tokens=6, max_total_tokens=96)
    seeds = [0, 1, 2]
    rollout, episodes = run(model, Countdown, seeds, settings)
    assert rollout.tokens.shape == (6, 96) and rollout.group_size == 2
    mask, turn_ids = np.asarray(rollout.loss_mask), np.asarray(rollout.turn_ids)
    np.testing.assert_array_equal(turn_ids > 0, mask)  # exactly the policy's tokens carry a turn
    for b, episode in enumerate(episodes):
        turns = seeds[b // 2] % 3 + 1
        assert episode.done and not episode.truncated and int(rollout.num_turns[b]) == turns
        np.testing.assert_allclose(np.asarray(rollout.turn_rewards[b]),
                                   [t / 10 for t in range(1, turns + 1)] + [0.0] * (4 - turns), rtol=1e-6)
        assert float(rollout.rewards[b]) == pytest.approx(sum(t / 10 for t in range(1, turns + 1)))
        assert np.asarray(rollout.state_keys[b]).tolist() == (
            [state_hash(turns - t) for t in range(turns)] + [-1] * (4 - turns))
        # The untrained tokens are the prompt and the observations, in order; turns are numbered 1, 2, ...
        context = np.asarray(rollout.tokens[b])[~mask[b] & (np.arange(96) < len(episode.tokens))]
        expected = TOKENIZER.encode("count %d" % turns, add_bos=True) + sum(
            (TOKENIZER.encode(f"\n{o}\n") for o in episode.observations), [])
        assert context.tolist() == expected
        assert sorted(set(turn_ids[b][mask[b]].tolist())) == list(range(1, turns + 1))
    # Each policy token's behaviour log-prob is the model's log-prob of it given the whole stream before it.
    stats = jax.jit(lambda t: token_stats(model, t))(rollout.tokens)
    np.testing.assert_allclose(np.asarray(stats.logprobs)[mask], np.asarray(rollout.behaviour_logprobs)[mask],
                               atol=2e-4)


def test_limits_truncate_and_never_cut(model):
    endless = lambda: Countdown(length=100)  # noqa: E731
    rollout, episodes = run(model, endless, [0], EpisodeSettings(max_turns=3, max_turn_tokens=6, max_total_tokens=96))
    assert np.asarray(rollout.truncated).all() and np.asarray(rollout.num_turns).tolist() == [3, 3]
    # A tight context: the episode stops before a turn or an observation would not fit.
    rollout, episodes = run(model, endless, [0], EpisodeSettings(max_turns=20, max_turn_tokens=6, max_total_tokens=40))
    for b, episode in enumerate(episodes):
        assert episode.truncated and len(episode.tokens) <= 40
        # Stopped because the next observation and one more turn would not have fit.
        assert len(episode.observations) == len(episode.actions) - 1
        assert len(episode.tokens) + len(f"\nleft {100 - len(episode.actions)}\n") + 6 > 40
        turns = np.asarray(rollout.turn_ids[b])
        per_turn = [int((turns == k).sum()) for k in range(1, int(rollout.num_turns[b]) + 1)]
        assert all(1 <= n <= 6 for n in per_turn) and sum(per_turn) == int(np.asarray(rollout.loss_mask[b]).sum())
    with pytest.raises(ValueError, match="leaves no room"):
        run(model, endless, [0], EpisodeSettings(max_turns=2, max_turn_tokens=35, max_total_tokens=40))


def test_environment_errors_name_the_turn(model):
    with pytest.raises(EnvError, match=r"'countdown' \(episode seed 5, turn 2\): step raised RuntimeError"):
        run(model, lambda: Countdown(length=4, fail_at=2), [5],
            EpisodeSettings(max_turns=4, max_turn_tokens=4, max_total_tokens=64), k=1)


def test_chat_observation_is_the_templates_own_turn_boundary():
    ids = observation_tokens(TOKENIZER, True, "obs", [65, TOKENIZER.eos_id])
    assert TOKENIZER.decode(ids) == "\n<|user|>\nobs\n<|assistant|>\n"
    assert TOKENIZER.decode(observation_tokens(TOKENIZER, False, "obs", [65])) == "\nobs\n"
