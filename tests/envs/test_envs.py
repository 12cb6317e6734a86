"""The environment protocol, its error reporting, the tool-call syntax and
the built-in environments' scripted optimal policies."""

import hypothesis
import hypothesis.strategies as st
import pytest

from rlzoo.envs import (
    EnvError, Step, UnknownEnvError, checked_reset, checked_step, get_env, list_envs, load_env, state_hash,
)
from rlzoo.envs.calculator import CalculatorEnv, evaluate
from rlzoo.envs.guess_number import GuessNumberEnv
from rlzoo.envs.tools import Answer, Call, Invalid, parse_action


def play_optimally(env, seed: int, max_turns: int) -> tuple[float, int, bool]:
    checked_reset(env, seed)
    total = 0.0
    for turn in range(1, max_turns + 1):
        step = checked_step(env, env.optimal_action(), seed, turn)
        total += step.reward
        if step.done:
            return total, turn, True
    return total, max_turns, False


@hypothesis.given(seed=st.integers(0, 2**31 - 1), digits=st.integers(1, 3), terms=st.integers(2, 4))
def test_calculator_optimal_policy_wins_in_two_turns(seed, digits, terms):
    env = CalculatorEnv(digits=digits, terms=terms)
    assert play_optimally(env, seed, env.max_turns) == (1.0, 2, True)


@hypothesis.given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 200))
def test_guess_number_binary_search_wins_within_its_bound(seed, n):
    env = GuessNumberEnv(n=n)
    reward, turns, done = play_optimally(env, seed, env.max_turns)
    assert done and reward == 1.0
    assert turns <= (n + 1).bit_length()  # ⌈log2(n + 1)⌉


def test_guess_number_states_repeat_across_episodes():
    """Every episode starts in the same state, and the same feedback leads to the same state."""
    keys = set()
    for seed in range(20):
        env = GuessNumberEnv(n=16)
        _, info = env.reset(seed)
        keys.add(info["state_key"])
    assert keys == {(1, 16)}
    a, b = GuessNumberEnv(n=16), GuessNumberEnv(n=16)
    seeds = [s for s in range(50) if a.reset(s) and a.secret > 8][:2]
    a.reset(seeds[0]), b.reset(seeds[1])
    assert a.step("8").info["state_key"] == b.step("8").info["state_key"] == (9, 16)


def test_wrong_answers_and_bad_calls_score_zero_and_never_crash():
    env = CalculatorEnv()
    prompt, _ = env.reset(3)
    assert "<call>calc:" in prompt
    for action in ("hello", "<call>calc 1+2</call>", "<call>search: x</call>", "<call>calc: __import__('os')</call>",
                   "<call>calc: 2**99999</call>"):
        step = env.step(action)
        assert step.observation.startswith("invalid call:") and step.reward == 0 and not step.done, action
    assert env.step("<call>calc: (2+3)*4</call>").observation == "<result>20</result>"
    wrong = env.step(f"<answer>{int(env.reference) + 1}</answer>")
    assert wrong.done and wrong.reward == 0.0


def test_parse_action_takes_the_first_tag():
    assert parse_action("think <call>calc: 1+2</call> <answer>3</answer>") == Call("calc", "1+2")
    assert parse_action("<answer> 3 </answer><call>calc: 1</call>") == Answer("3")
    assert isinstance(parse_action("<call>oops"), Invalid)


@hypothesis.given(a=st.integers(-10**6, 10**6), b=st.integers(-10**6, 10**6), c=st.integers(-999, 999))
def test_evaluate_matches_python_arithmetic(a, b, c):
    assert evaluate(f"{a}*({b}-{c})+{c}") == a * (b - c) + c


class Broken:
    name = "broken"

    def __init__(self, failure: str = "raise"):
        self.failure = failure

    def reset(self, seed):
        if self.failure == "reset":
            raise KeyError("no such level")
        return 42 if self.failure == "observation" else "go"

    def step(self, action):
        if self.failure == "raise":
            raise ZeroDivisionError("oops")
        if self.failure == "reward":
            return Step("x", float("nan"), False)
        return ("x", 1.0)


@pytest.mark.parametrize("failure,message", [
    ("reset", "reset raised KeyError"), ("observation", "observation string"), ("raise", "step raised ZeroDivision"),
    ("reward", "not finite"), ("tuple", "tuple of 2"),
])
def test_misbehaving_environments_get_one_clear_error(failure, message):
    env = Broken(failure)
    with pytest.raises(EnvError, match=message) as info:
        checked_reset(env, 7)
        checked_step(env, "a", 7, 3)
    assert "'broken'" in str(info.value) and "seed 7" in str(info.value)


def test_registry_and_user_classes():
    assert {"calculator", "guess_number"} <= set(list_envs())
    assert isinstance(get_env("guess-number", n=8), GuessNumberEnv)
    assert isinstance(load_env("rlzoo.envs.calculator:CalculatorEnv", digits=1), CalculatorEnv)
    with pytest.raises(UnknownEnvError, match="calculator"):
        get_env("calculater")
    with pytest.raises(UnknownEnvError, match="cannot import"):
        load_env("no_such_module_here:Env")
    with pytest.raises(ValueError, match="no option"):
        get_env("calculator", digitz=2)


def test_state_hash_is_stable_and_distinguishes():
    assert state_hash(None) == -1
    assert state_hash((1, 16)) == state_hash((1, 16)) != state_hash((1, 15))
    assert 0 <= state_hash("anything") < 2**31


def test_cli_lists_the_environments(capsys):
    from rlzoo import cli

    assert cli.main(["list", "--envs", "--width", "200"]) == 0
    out = capsys.readouterr().out
    for name in list_envs():
        assert name in out
    assert "higher" in out  # each row says what the environment is


@hypothesis.given(seed=st.integers(0, 2**31 - 1), size=st.integers(2, 6), walls=st.floats(0.0, 0.4))
def test_grid_world_shortest_path_policy_reaches_the_goal_in_the_fewest_moves(seed, size, walls):
    from rlzoo.envs.grid_world import GridWorldEnv

    env = GridWorldEnv(size=size, wall_fraction=walls)
    checked_reset(env, seed)
    shortest = env.distances()[env.agent]
    assert shortest >= 1 and env.render().count("A") == 1 and env.render().count("G") == 1
    reward, turns, done = play_optimally(env, seed, env.max_turns)
    assert done and reward == 1.0 and turns == shortest


def test_grid_world_walls_block_and_states_are_cells():
    from rlzoo.envs.grid_world import MOVES, GridWorldEnv

    env = GridWorldEnv(size=5, wall_fraction=0.3)
    _, info = env.reset(11)
    assert info["state_key"] == env.agent
    for move in MOVES:  # a move into a wall or off the grid stays put; any move keeps the state a free cell
        env.reset(11)
        step = env.step(f"I go {move.upper()} now")
        r, c = step.info.get("state_key", env.goal)
        assert not env.walls[r, c]
    env.reset(11)
    stay = env.step("north")
    assert stay.observation.startswith("invalid move") and stay.info["state_key"] == env.agent
    again = GridWorldEnv(size=5, wall_fraction=0.3)
    assert again.reset(11)[0] == env.reset(11)[0]  # the seed fixes the maze
