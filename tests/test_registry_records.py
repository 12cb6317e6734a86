"""Record-level invariants of every registered algorithm: Configs are built
from the shared pieces and validated once, needs and top-k are declared,
and estimators pair with losses by name or are refused with a clear error."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from rlzoo import list_algorithms, pieces
from rlzoo.registry import COMPOSABLE, get_algorithm

ALGORITHMS = list_algorithms()
IDS = [a.name for a in ALGORITHMS]


@pytest.mark.parametrize("algo", ALGORITHMS, ids=IDS)
def test_config_is_built_from_the_pieces_and_defaults_validate(algo):
    assert issubclass(algo.Config, pieces.ConfigBase), f"{algo.name}: Config must derive from rlzoo.pieces.ConfigBase"
    cfg = algo.Config()
    assert algo.required(cfg) >= cfg.needs()
    assert algo.topk_size(cfg) >= 0


@pytest.mark.parametrize("algo", ALGORITHMS, ids=IDS)
def test_every_float_setting_rejects_non_finite_values_by_flag(algo):
    hints = typing.get_type_hints(algo.Config)
    floats = [f.name for f in dataclasses.fields(algo.Config)
              if hints[f.name] in (float, float | None) and f.default is not None]
    for name in floats:
        for bad in (math.nan, math.inf):
            with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} must be finite"):
                algo.make_config(**{name: bad})


@pytest.mark.parametrize("algo", [a for a in ALGORITHMS if "clip_eps_low" in {f.name for f in dataclasses.fields(a.Config)}],
                         ids=lambda a: a.name)
def test_negative_clip_bound_is_refused(algo):
    with pytest.raises(ValueError, match="--clip-eps-low must be >= 0"):
        algo.make_config(clip_eps_low=-1.0)


def test_kl_and_entropy_needs_come_from_the_pieces():
    grpo = get_algorithm("grpo")
    assert "ref_logprobs" in grpo.required(grpo.make_config(kl_coef=0.04))
    assert "ref_logprobs" not in grpo.required(grpo.make_config(kl_coef=0.0))
    assert "entropy" in grpo.required(grpo.make_config(entropy_coef=0.01))


@pytest.mark.parametrize("algo", [a for a in ALGORITHMS if a.family in COMPOSABLE], ids=lambda a: a.name)
def test_composable_losses_take_another_estimator_or_refuse_by_name(algo):
    """Every loss of the composable families runs on GRPO's estimator, unless
    its record says why not (state kept by its own estimator, dict targets)."""
    try:
        paired = get_algorithm(algo.name, advantage="grpo")
    except ValueError as err:
        assert algo.name in str(err) and ("state" in str(err) or "targets" in str(err))
        return
    paired.Config()  # the paired defaults validate
    names = {f.name for f in dataclasses.fields(paired.Config)}
    assert {"std_eps", "scale_rewards"} <= names, "GRPO's estimator fields are settable"
