"""Environments for multi-turn episodes: what a policy talks to between turns.

An environment is a plain Python object with two methods:

    class Echo:
        name = "echo"
        max_turns = 4

        def reset(self, seed: int) -> str | tuple[str, dict]:
            return "Say hi."                       # the first observation (+ optional info)

        def step(self, action: str) -> Step | tuple[str, float, bool, dict]:
            return Step(observation="", reward=float("hi" in action), done=True)

`reset(seed)` starts an episode (the same seed -> the same episode) and
returns the first observation; `step(action)` takes the policy's turn (its
decoded text, end token removed) and returns the next observation, the
turn's reward, whether the episode is over, and an info dict. Info may
carry:

- `state_key`: a hashable description of the environment's state before the
  *next* turn (`reset`'s info gives the first one). Equal keys mean the
  same state, so steps of different episodes can be grouped by it (GiGPO's
  anchor states);
- `reward_parts`: {name: value} components of the turn's reward.

An episode's outcome reward is the sum of its turn rewards. Environments
are listed by `list_envs()` and built by `get_env(name, **options)`; a
user's class is given as "module:Class" (`load_env`). Tool-calling
environments use the call syntax of `rlzoo.envs.tools`.
"""

from __future__ import annotations

import dataclasses
import importlib
import zlib
from typing import Any, Protocol, runtime_checkable

from rlzoo.named import construct, did_you_mean

__all__ = [
    "EnvError", "Environment", "Step", "UnknownEnvError", "checked_reset", "checked_step", "describe_env", "get_env",
    "list_envs", "load_env", "state_hash",
]


@dataclasses.dataclass(frozen=True)
class Step:
    """What `Environment.step` returns."""

    observation: str
    """Text shown to the policy before its next turn ("" when done)."""
    reward: float = 0.0
    """This turn's reward."""
    done: bool = False
    """The episode is over (no further turn)."""
    info: dict = dataclasses.field(default_factory=dict)
    """Optional `state_key` (hashable) and `reward_parts` ({name: float})."""


@runtime_checkable
class Environment(Protocol):
    """What the episode runner needs from an environment."""

    name: str

    def reset(self, seed: int) -> str | tuple[str, dict]:
        ...

    def step(self, action: str) -> Step | tuple[str, float, bool, dict]:
        ...


class EnvError(RuntimeError):
    """An environment misbehaved: it raised, or returned something malformed.
    The message names the environment, the episode's seed and the turn."""


class UnknownEnvError(ValueError):
    """Raised by `get_env` for a name that is not a registered environment."""


def state_hash(key: Any) -> int:
    """A stable non-negative int32 for a hashable state key (the same key ->
    the same number in every process: Python's own `hash` of a string is
    salted per process). None -> −1 (no key)."""
    if key is None:
        return -1
    return zlib.crc32(repr(key).encode()) & 0x7FFFFFFF


def _where(env: Any, seed: int, turn: int) -> str:
    return f"environment {getattr(env, 'name', type(env).__name__)!r} (episode seed {seed}, turn {turn})"


def checked_reset(env: Any, seed: int) -> tuple[str, dict]:
    """env.reset(seed) as (observation, info), or an EnvError that says what was wrong."""
    try:
        out = env.reset(seed)
    except Exception as error:  # an environment's bug, reported with where it happened
        raise EnvError(f"{_where(env, seed, 0)}: reset raised {type(error).__name__}: {error}") from error
    observation, info = out if isinstance(out, tuple) else (out, {})
    if not isinstance(observation, str):
        raise EnvError(f"{_where(env, seed, 0)}: reset must return an observation string, got "
                       f"{type(observation).__name__}")
    if not isinstance(info, dict):
        raise EnvError(f"{_where(env, seed, 0)}: reset's info must be a dict, got {type(info).__name__}")
    return observation, info


def checked_step(env: Any, action: str, seed: int, turn: int) -> Step:
    """env.step(action) as a validated `Step`, or an EnvError naming the turn."""
    try:
        out = env.step(action)
    except Exception as error:
        raise EnvError(f"{_where(env, seed, turn)}: step raised {type(error).__name__}: {error}") from error
    if isinstance(out, tuple):
        if len(out) != 4:
            raise EnvError(f"{_where(env, seed, turn)}: step must return a Step or (observation, reward, done, "
                           f"info), got a tuple of {len(out)}")
        out = Step(*out)
    if not isinstance(out, Step):
        raise EnvError(f"{_where(env, seed, turn)}: step must return a Step, got {type(out).__name__}")
    if not isinstance(out.observation, str):
        raise EnvError(f"{_where(env, seed, turn)}: the observation must be a string, got "
                       f"{type(out.observation).__name__}")
    try:
        reward = float(out.reward)
    except (TypeError, ValueError):
        raise EnvError(f"{_where(env, seed, turn)}: the reward must be a number, got {out.reward!r}") from None
    if reward != reward or reward in (float("inf"), float("-inf")):
        raise EnvError(f"{_where(env, seed, turn)}: the reward is not finite ({reward})")
    if not isinstance(out.info, dict):
        raise EnvError(f"{_where(env, seed, turn)}: info must be a dict, got {type(out.info).__name__}")
    return dataclasses.replace(out, reward=reward, done=bool(out.done))


# name -> "module:attribute", imported on first use.
_ENVS: dict[str, str] = {
    "calculator": "rlzoo.envs.calculator:CalculatorEnv",
    "guess_number": "rlzoo.envs.guess_number:GuessNumberEnv",
    "grid_world": "rlzoo.envs.grid_world:GridWorldEnv",
}


def list_envs() -> list[str]:
    """Names of the built-in environments, sorted."""
    return sorted(_ENVS)


def describe_env(name: str) -> str:
    """The first line of a built-in environment's module docstring."""
    module = importlib.import_module(_ENVS[name].split(":")[0])
    return " ".join((module.__doc__ or "").split("\n\n")[0].split())


def load_env(spec: str, **options) -> Any:
    """An environment from a built-in name or "module:Class" (a user's class,
    constructed with `options`)."""
    if ":" not in spec:
        return get_env(spec, **options)
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UnknownEnvError(f"cannot import environment module {module_name!r} (from {spec!r}): {error}") from error
    if not hasattr(module, attr):
        raise UnknownEnvError(f"module {module_name!r} has no {attr!r} (from {spec!r})")
    env = construct(getattr(module, attr), spec, options)
    if not isinstance(env, Environment):
        raise UnknownEnvError(f"{spec!r} is not an environment: it needs a name and reset(seed) / step(action)")
    return env


def get_env(name: str, **options) -> Any:
    """The built-in environment `name`, constructed with `options`."""
    key = name.strip().lower().replace("-", "_")
    if key not in _ENVS:
        raise UnknownEnvError(f"unknown environment {name!r}.{did_you_mean(key, _ENVS)} Available environments: "
                              f"{', '.join(list_envs())}; or give a user's class as module:Class.")
    module, attr = _ENVS[key].split(":")
    return construct(getattr(importlib.import_module(module), attr), f"environment {key}", options)
