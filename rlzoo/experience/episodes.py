"""Stage 2, generation for multi-turn episodes: K episodes per task against
an environment, every policy turn of every live episode in one batched
sampler call, environment steps on the host.

Each row of the Rollout is one episode, laid out as a single token stream:

    prompt | turn 1 (policy) | observation 1 | turn 2 (policy) | ... | padding

Policy tokens (including the end token that closed the turn) have
`loss_mask` True, `behaviour_logprobs` from the sampler and `turn_ids` k for
the k-th turn; prompt, observation and padding tokens have `loss_mask`
False and `turn_ids` 0, so they never receive gradient. `turn_rewards[b, k−1]`
is the environment's reward after turn k, `rewards[b]` their sum,
`state_keys[b, k−1]` the hash (`rlzoo.envs.state_hash`) of the state before
turn k, `num_turns[b]` the turns taken. An episode ends when the environment
says done; it is marked `truncated` when it reaches `max_turns`, or when the
next turn would not fit in `max_total_tokens`, without being done: it is
never silently cut. Rows are padded to `max_total_tokens`, so the update's
shapes do not change from step to step.

This version re-encodes each live episode's whole history at every turn
(the sampler's prefill); keeping each episode's KV cache across turns is the
planned next step, with this function as the reference it must match.

Observation text is appended after the policy's end token. For chat-template
models it is the template's own turn boundary (the assistant turn closed,
then a user turn with the observation, then the generation prompt: see
`observation_tokens`); for the byte-tokenizer presets it is plain
"\\n{observation}\\n".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from rlzoo.envs import checked_reset, checked_step, state_hash
from rlzoo.experience.generation import SamplingSettings
from rlzoo.experience.prompts import encode_prompt
from rlzoo.rollout import Rollout, validate
from rlzoo.sampling import Sampler, response_tokens


@dataclasses.dataclass(frozen=True)
class EpisodeSettings:
    max_turns: int
    """Policy turns per episode."""
    max_turn_tokens: int
    """New tokens per policy turn."""
    max_total_tokens: int
    """The episode's whole token stream (prompt, turns, observations): the Rollout's T."""

    def __post_init__(self):
        if self.max_turns < 1 or self.max_turn_tokens < 1:
            raise ValueError(f"need max_turns >= 1 and max_turn_tokens >= 1, got {self.max_turns}, "
                             f"{self.max_turn_tokens}")
        if self.max_total_tokens < 2 + self.max_turn_tokens:
            raise ValueError(f"max_total_tokens {self.max_total_tokens} leaves no room for one turn of "
                             f"{self.max_turn_tokens} tokens after a prompt")


@dataclasses.dataclass
class Episode:
    """One episode's token stream, built turn by turn on the host."""

    env: Any
    seed: int
    tokens: list[int]
    loss_mask: list[bool]
    logprobs: list[float]
    turn_ids: list[int]
    turn_rewards: list[float] = dataclasses.field(default_factory=list)
    state_keys: list[int] = dataclasses.field(default_factory=list)
    actions: list[str] = dataclasses.field(default_factory=list)
    observations: list[str] = dataclasses.field(default_factory=list)
    """The observations in the token stream (one after each turn but the last)."""
    next_state_key: int = -1
    done: bool = False
    truncated: bool = False

    @property
    def live(self) -> bool:
        return not (self.done or self.truncated)

    def append(self, ids: list[int], trained: bool, logprobs: list[float] | None = None, turn: int = 0) -> None:
        self.tokens += ids
        self.loss_mask += [trained] * len(ids)
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(ids)
        self.turn_ids += [turn] * len(ids)


def observation_tokens(tokenizer, chat: bool, observation: str, action_ids: list[int]) -> list[int]:
    """The tokens that follow a policy turn: the turn boundary and the
    observation, up to where the policy writes its next turn.

    For a chat template, the text between the end of an assistant message and
    the next generation prompt is read off the template itself (two renders
    with a placeholder reply, one with and one without a following user
    message), minus the end token the policy already wrote.
    """
    if not chat:
        return tokenizer.encode(f"\n{observation}\n")
    placeholder = "\x00reply\x00"
    before = tokenizer.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": placeholder}],
        add_generation_prompt=False)
    after = tokenizer.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": placeholder},
         {"role": "user", "content": observation}], add_generation_prompt=True)
    if not after.startswith(before):
        raise ValueError("this chat template renders a conversation's earlier turns differently once a turn "
                         "is added; multi-turn episodes need a template that only appends")
    closing = before[before.index(placeholder) + len(placeholder):]
    stops = set(getattr(tokenizer, "stop_ids", (tokenizer.eos_id,)))
    if action_ids and action_ids[-1] in stops:
        try:
            ended = tokenizer.decode([action_ids[-1]], skip_special_tokens=False)
        except TypeError:  # a tokenizer whose decode has no such switch keeps special tokens anyway
            ended = tokenizer.decode([action_ids[-1]])
        if closing.startswith(ended):
            closing = closing[len(ended):]
    return tokenizer.encode(closing + after[len(before):])


def run_episodes(sampler: Sampler, model, tokenizer, chat: bool, make_env: Callable[[], Any], seeds: list[int],
                 num_samples: int, rng: jax.Array, sampling: SamplingSettings,
                 settings: EpisodeSettings) -> tuple[Rollout, list[Episode]]:
    """K = `num_samples` episodes of each task seed (rows prompt-major, like
    the single-turn sampler), as a Rollout with the turn fields, and the
    episodes themselves (actions and observations as text)."""
    if not seeds or num_samples < 1:
        raise ValueError(f"need at least one seed and num_samples >= 1, got {len(seeds)}, {num_samples}")
    episodes = []
    for seed in seeds:
        for _ in range(num_samples):
            env = make_env()
            observation, info = checked_reset(env, seed)
            prompt = encode_prompt(tokenizer, observation, chat)
            if len(prompt) + settings.max_turn_tokens > settings.max_total_tokens:
                raise ValueError(f"episode seed {seed}: the first observation takes {len(prompt)} tokens, which "
                                 f"leaves no room for a {settings.max_turn_tokens}-token turn within "
                                 f"max_total_tokens {settings.max_total_tokens}")
            episode = Episode(env, seed, [], [], [], [])
            episode.append(prompt, trained=False)
            episode.next_state_key = state_hash(info.get("state_key"))
            episodes.append(episode)
    stops = list(getattr(tokenizer, "stop_ids", (tokenizer.eos_id,))) if sampling.stop_at_eos else []
    for turn in range(1, settings.max_turns + 1):
        live = [e for e in episodes if e.live]
        for episode in live:
            if len(episode.tokens) + settings.max_turn_tokens > settings.max_total_tokens:
                episode.truncated = True
        live = [e for e in live if e.live]
        if not live:
            break
        out = sampler(model, [e.tokens for e in live], num_samples=1, max_new_tokens=settings.max_turn_tokens,
                      rng=jax.random.fold_in(rng, turn), temperature=sampling.temperature, top_k=sampling.top_k,
                      top_p=sampling.top_p, eos_id=stops, pad_id=tokenizer.pad_id)
        generated, texts = response_tokens(out, keep_eos=True), response_tokens(out)
        mask, logprobs = np.asarray(out.loss_mask), np.asarray(out.behaviour_logprobs)
        for row, (episode, ids) in enumerate(zip(live, generated)):
            episode.state_keys.append(episode.next_state_key)
            episode.append(ids, trained=True, logprobs=logprobs[row][mask[row]].tolist(), turn=turn)
            action = tokenizer.decode(texts[row])
            step = checked_step(episode.env, action, episode.seed, turn)
            episode.actions.append(action)
            episode.turn_rewards.append(step.reward)
            episode.next_state_key = state_hash(step.info.get("state_key"))
            if step.done:
                episode.done = True
                continue
            following = observation_tokens(tokenizer, chat, step.observation, ids)
            if turn == settings.max_turns:
                episode.truncated = True
            elif len(episode.tokens) + len(following) + settings.max_turn_tokens > settings.max_total_tokens:
                episode.truncated = True  # the observation and one more turn would not fit
            else:
                episode.observations.append(step.observation)
                episode.append(following, trained=False)
    return _to_rollout(episodes, num_samples, settings, tokenizer.pad_id), episodes


def _to_rollout(episodes: list[Episode], group_size: int, settings: EpisodeSettings, pad_id: int) -> Rollout:
    rows, length, turns = len(episodes), settings.max_total_tokens, settings.max_turns
    tokens = np.full((rows, length), pad_id, np.int32)
    mask = np.zeros((rows, length), bool)
    logprobs = np.zeros((rows, length), np.float32)
    turn_ids = np.zeros((rows, length), np.int32)
    turn_rewards = np.zeros((rows, turns), np.float32)
    state_keys = np.full((rows, turns), -1, np.int32)
    for b, e in enumerate(episodes):
        n = len(e.tokens)
        tokens[b, :n], mask[b, :n], logprobs[b, :n], turn_ids[b, :n] = e.tokens, e.loss_mask, e.logprobs, e.turn_ids
        turn_rewards[b, :len(e.turn_rewards)] = e.turn_rewards
        state_keys[b, :len(e.state_keys)] = e.state_keys
    return validate(Rollout(
        tokens=tokens, loss_mask=mask, behaviour_logprobs=logprobs, rewards=turn_rewards.sum(1),
        sample_weight=np.ones((rows,), np.float32), group_size=group_size,
        truncated=np.array([e.truncated for e in episodes]), turn_ids=turn_ids, turn_rewards=turn_rewards,
        state_keys=state_keys, num_turns=np.array([len(e.turn_rewards) for e in episodes], np.int32),
    ))
