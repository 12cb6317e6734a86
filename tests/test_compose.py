"""Estimators and losses compose by name: a paired record computes exactly
the estimator's advantages and the loss's loss, each under its own Config."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.algorithms import bnpo, cispo, grpo
from rlzoo.registry import registered
from rlzoo.testing import loss_and_grad, random_batch

seeds = st.integers(0, 2**16)


@given(seeds)
def test_paired_record_is_the_estimator_then_the_loss(seed):
    rollout, stats = random_batch(seed, batch=16, length=10, group_size=4, binary_rewards=True)
    paired = get_algorithm("cispo", advantage="bnpo")
    cfg = paired.make_config(decompose=False, eps_high_is=2.0, reward_max=1.0)
    adv, _ = paired.advantages(rollout, cfg, paired.init_state(cfg))
    expected_adv, _ = bnpo.advantages(rollout, bnpo.Config(), ())
    np.testing.assert_array_equal(adv, expected_adv)
    loss, _, grads = loss_and_grad(paired, cfg, stats, rollout, adv=adv)
    own = get_algorithm("cispo")
    expected_loss, _, expected_grads = loss_and_grad(own, cispo.Config(eps_high_is=2.0), stats, rollout, adv=adv)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    np.testing.assert_allclose(grads.logprobs, expected_grads.logprobs, rtol=1e-6, atol=1e-9)


def test_estimator_only_paper_comes_with_its_loss_and_defaults():
    record = get_algorithm("bnpo")
    cfg = record.Config()
    loss_cfg = grpo.Config(**registered("bnpo").loss_defaults)
    for field in dataclasses.fields(loss_cfg):
        if field.name not in get_algorithm("grpo").estimator_fields:
            assert getattr(cfg, field.name) == getattr(loss_cfg, field.name), field.name
    assert cfg.clip_eps_high == 0.28 and cfg.dual_clip == 10.0 and cfg.kl_coef == 0.0
    rollout, stats = random_batch(3, batch=16, length=10, group_size=4, binary_rewards=True)
    adv, _ = bnpo.advantages(rollout, bnpo.Config(), ())
    loss, _, _ = loss_and_grad(record, cfg, stats, rollout, adv=adv)
    expected, _, _ = loss_and_grad(get_algorithm("grpo"), loss_cfg, stats, rollout, adv=adv)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_a_field_both_halves_have_is_one_setting():
    paired = get_algorithm("copo", advantage="grpo")
    names = [f.name for f in dataclasses.fields(paired.Config)]
    assert names.count("std_eps") == 1
    cfg = paired.make_config(std_eps=1e-3)
    loss_cfg, est_cfg = cfg._parts
    assert loss_cfg.std_eps == est_cfg.std_eps == 1e-3


def test_loss_side_estimator_fields_are_dropped():
    names = {f.name for f in dataclasses.fields(get_algorithm("grpo", advantage="rloo").Config)}
    assert not names & {"scale_rewards", "std_eps", "std_ddof"}
    assert {"clip_eps_low", "kl_coef"} <= names


@pytest.mark.parametrize("loss, estimator, message", [
    ("dpo", "bnpo", "dpo (preference) cannot serve as the loss"),
    ("grpo", "sppo", "sppo (self-play) cannot serve as the estimator"),
    ("drpo", "grpo", "drpo's targets are not a plain"),
    ("grpo", "nosuch", "unknown algorithm 'nosuch'"),
])
def test_impossible_pairings_are_refused_by_name(loss, estimator, message):
    with pytest.raises((ValueError, LookupError), match=message.replace("(", r"\(").replace(")", r"\)")):
        get_algorithm(loss, advantage=estimator)


def test_paired_config_is_validated():
    paired = get_algorithm("grpo", advantage="bnpo")
    with pytest.raises(ValueError, match="--clip-eps-low must be >= 0"):
        paired.make_config(clip_eps_low=-1.0)
    with pytest.raises(ValueError, match="finite"):
        paired.make_config(kl_coef=float("inf"))
