"""The trainer: sharded update equals single-device, resume equivalence,
determinism, a smoke run per algorithm family, and CLI input errors."""

from __future__ import annotations


import jax
import numpy as np
import optax
import pytest

from rlzoo import cli, get_algorithm, ops
from rlzoo.checkpoint import Checkpointer
from rlzoo.sharding import shard_batch
from rlzoo.tasks import Example
from rlzoo.tokenizers import ByteTokenizer
from rlzoo.experience.segments import sentence_end_ids, sentence_segment_ids
from rlzoo.train import RunConfig, Trainer
from rlzoo.update import algorithm_loss, make_update, policy_stats_fn

TINY = dict(
    model="tiny", prompts_per_step=4, samples_per_prompt=4, max_new_tokens=4, eval_size=8,
    sft_steps=0, eval_every=0, checkpoint_every=0, progress=False, tensorboard=False,
)


def run_config(tmp_path, **kw) -> RunConfig:
    return RunConfig(**{**TINY, "run_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache"), **kw})


def params_of(trainer):
    return jax.tree.leaves(jax.device_get(trainer.state.params))


def assert_params_close(a, b, **tol):
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, **tol)


def test_sharded_update_equals_single_device(tmp_path):
    single = Trainer(run_config(tmp_path, mesh_data=1, mesh_fsdp=1, mesh_tensor=1))
    sharded = Trainer(run_config(tmp_path, mesh_data=2, mesh_fsdp=2, mesh_tensor=2))
    assert sharded.mesh.devices.size == 8
    examples = single.task.train_examples(np.random.default_rng(0), 4)
    rollout = single.with_logprobs(single.sample(examples, 4, jax.random.key(1)), 0).with_normaliser()
    # Random advantages: a random policy's rewards are often all equal, which would make GRPO's zero.
    adv = jax.numpy.where(rollout.loss_mask, jax.random.normal(jax.random.key(2), rollout.loss_mask.shape), 0.0)
    # SGD with step 1 makes the parameter change the gradient itself, so the
    # comparison is not blurred by Adam's sign-like first step.
    step = make_update(single.graphdef, algorithm_loss(single.algo, single.cfg), optax.sgd(1.0))
    before = params_of(single)
    new_single, m1 = jax.jit(step)(single.state, rollout, adv)
    new_sharded, m2 = jax.jit(step)(sharded.state, shard_batch(rollout, sharded.mesh), shard_batch(adv, sharded.mesh))
    assert any(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(new_sharded.params))
    after_single = jax.tree.leaves(jax.device_get(new_single.params))
    assert any(np.abs(x - y).max() > 0 for x, y in zip(before, after_single)), "the update changed nothing"
    assert_params_close(after_single, jax.tree.leaves(jax.device_get(new_sharded.params)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(m1["grad_norm"]), float(m2["grad_norm"]), rtol=1e-4)
    # The trainer's own jitted update (AdamW, donated buffers) runs sharded too.
    _, m3 = sharded._update(sharded.state, shard_batch(rollout, sharded.mesh), shard_batch(adv, sharded.mesh))
    np.testing.assert_allclose(float(m3["loss"]), float(m1["loss"]), rtol=1e-5, atol=1e-7)


def test_sharded_run_completes(tmp_path):
    summary = Trainer(run_config(tmp_path, steps=3, mesh_data=2, mesh_fsdp=2, mesh_tensor=2, eval_every=3)).train()
    assert summary["steps"] == 3 and summary["final_accuracy"] is not None


def test_resume_reaches_the_same_parameters(tmp_path):
    straight = Trainer(run_config(tmp_path / "a", steps=4))
    straight.train()

    class Interrupt(Trainer):
        def step(self, step):
            if step == 2:
                raise KeyboardInterrupt
            return super().step(step)

    with pytest.raises(KeyboardInterrupt):
        Interrupt(run_config(tmp_path / "b", steps=4)).train()
    resumed = Trainer(run_config(tmp_path / "b", steps=4, resume=True))
    resumed.train()
    assert_params_close(params_of(straight), params_of(resumed), rtol=1e-6, atol=1e-7)


def test_same_seed_same_run(tmp_path):
    a = Trainer(run_config(tmp_path / "a", steps=2))
    b = Trainer(run_config(tmp_path / "b", steps=2))
    a.train(), b.train()
    assert_params_close(params_of(a), params_of(b), rtol=0, atol=0)


@pytest.mark.parametrize("algo", ["grpo", "reinforce", "gdpo", "dpo", "sppo", "ppo", "sspo"])
def test_smoke_training_per_family(tmp_path, algo):
    trainer = Trainer(run_config(tmp_path, algo=algo, steps=2))
    metrics = [trainer.step(s) for s in range(2)]
    assert all(r["entropy"] > 0 for r in metrics), "a random policy samples with positive entropy"
    for record in metrics:
        for name, value in record.items():
            assert np.isfinite(value), f"{algo}: {name} = {value}"


def test_moving_reference_extrapolates_the_two_newest_iterates(tmp_path):
    """APO's reference hook: after refreshes the trainer feeds the loss
    (1 + α) log π̂_{t+1} − α log π̂_t from the two newest frozen iterates."""
    trainer = Trainer(run_config(tmp_path, algo="apo_accelerated", ref_refresh_every=1, steps=2))
    first_iterate = trainer.ref_params
    # A random policy's pairs are mostly ties (no DPO gradient): move the policy by hand.
    trainer.state = trainer.state.replace(params=jax.tree.map(lambda x: x * 1.05, trainer.state.params))
    trainer.step(0)
    assert trainer.prev_ref_params is first_iterate
    examples = trainer.task.train_examples(np.random.default_rng(0), 2)
    rollout = trainer.with_logprobs(trainer.sample(examples, 4, jax.random.key(3)), 1)
    latest = np.asarray(trainer.forwards.reference(trainer.ref_params, rollout.tokens).logprobs)
    previous = np.asarray(trainer.forwards.reference(first_iterate, rollout.tokens).logprobs)
    assert np.abs(latest - previous)[np.asarray(rollout.loss_mask)].max() > 0, "the iterates should differ"
    alpha = trainer.cfg.alpha
    expected = np.where(rollout.loss_mask, (1 + alpha) * latest - alpha * previous, 0.0)
    np.testing.assert_allclose(rollout.ref_logprobs, expected, rtol=1e-5, atol=1e-6)
    trainer.step(1)
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(2, trainer.saved_state(), {"step": 2})
    resumed = Trainer(run_config(tmp_path / "b", algo="apo_accelerated"))
    resumed.restore(ckpt)
    assert_params_close(jax.tree.leaves(jax.device_get(resumed.prev_ref_params)),
                        jax.tree.leaves(jax.device_get(trainer.prev_ref_params)), rtol=0, atol=0)


def test_dynamic_sampling_refills_the_batch_with_informative_groups(tmp_path):
    """DAPO's outer loop: further batches are drawn until the batch holds
    prompts_per_step groups whose rewards differ (or the rounds run out);
    informative groups come first and only the all-equal fill weighs 0."""
    trainer = Trainer(run_config(tmp_path, algo="dapo", max_sampling_rounds=4))
    k, groups = trainer.run.samples_per_prompt, trainer.run.prompts_per_step
    rng = np.random.default_rng(0)
    real = trainer.task.reward

    def sparse(completion, example):  # most groups of 4 are all 0
        return {**real(completion, example), "reward": float(rng.random() < 0.15)}

    trainer.task.reward = sparse
    for step in range(3):
        rollout, _, rounds = trainer.collect(step, jax.random.key(step))
        assert rollout.batch_size == groups * k and 1 <= rounds <= 4
        informative = ~np.asarray(ops.degenerate_groups(rollout.rewards, k)).reshape(-1, k)[:, 0]
        n = int(informative.sum())
        assert informative[:n].all() and not informative[n:].any(), "informative groups come first"
        assert n == groups or rounds == 4, "stopped early without filling the batch"
    metrics = trainer.step(3)
    assert metrics["sampling_rounds"] >= 1
    assert metrics["kept_rows"] % k == 0 and metrics["kept_rows"] > 0


def test_sentence_segments_start_after_sentence_ends():
    ends = sentence_end_ids(ByteTokenizer(), 259)
    tokens = np.asarray([list(b"Hi. Yes! ok")])
    assert sentence_segment_ids(tokens, ends).tolist() == [[0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2]]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--algo", "grpoo"], "unknown algorithm 'grpoo'. Did you mean: grpo"),
        (["train", "--task", "arithmetc"], "unknown task 'arithmetc'"),
        (["train", "--algo", "grpo", "--kl-coeff", "0.1"], "unknown option(s): --kl-coeff (did you mean --kl-coef"),
        (["train", "--steps", "-3"], "--steps must be >= 0; got -3"),
        (["train", "--learning-rate", "nan"], "--learning-rate must be finite; got nan"),
        (["train", "--learning-rate", "inf"], "--learning-rate must be finite; got inf"),
        (["train", "--learning-rate", "-1e-3"], "--learning-rate must be > 0.0; got -0.001"),
        (["train", "--temperature", "nan"], "--temperature must be finite; got nan"),
        (["train", "--max-grad-norm", "-1"], "--max-grad-norm must be >= 0.0; got -1.0"),
        (["train", "--top-p", "1.5"], "--top-p must be <= 1.0; got 1.5"),
        (["train", "--algo", "dpo", "--beta", "inf"], "--beta must be finite; got inf"),
        (["train", "--run-dir", "/no/such/run", "--resume", "true"], "--resume: no checkpoint in /no/such/run"),
        (["train", "--allow-config-change", "true"], "--allow-config-change only applies with --resume"),
        (["train", "--task-option", "digitz=3"], "task arithmetic takes no option(s) digitz (did you mean digits?)"),
        (["train", "--max-new-tokens", "600"], "--max-new-tokens 600 plus the longest prompt (7 tokens) exceeds"),
        (["train", "--minibatches", "3", "--prompts-per-step", "2"], "--minibatches 3 must divide --prompts-per-step 2"),
        (["train", "--model", "/no/such/dir"], "--model '/no/such/dir' is neither a preset"),
        (["train", "--data-dir", "/no/such/dir", "--task", "gsm8k"], "--data-dir /no/such/dir does not exist"),
        (["train", "--kl-coef", "high"], "--kl-coef must be a float; got 'high'"),
        (["train", "--clip-eps-low", "-1"], "--clip-eps-low must be >= 0.0; got -1"),
        (["train", "--algo", "dpo", "--beta", "nan"], "--beta must be finite; got nan"),
        (["train", "--algo", "dpo", "--advantage", "bnpo"], "dpo (preference) cannot serve as the loss"),
        (["train", "--algo", "grpo", "--advantage", "bnpoo"], "unknown algorithm 'bnpoo'"),
        (["list", "--family", "nope"], "unknown family 'nope'"),
        (["eval", "--run-dir", "/no/such/run"], "config.json not found"),
    ],
)
def test_cli_rejects_bad_input_with_one_line(capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_offline_preference_data_trains_a_pairwise_algorithm(tmp_path):
    """--preference-data: each step takes whole pairs from the file (chosen
    reward 1, rejected 0), every pair once per pass, and DPO moves the
    policy toward the chosen answers."""
    data = "tests/fixtures/preference_pairs.jsonl"
    trainer = Trainer(run_config(tmp_path, algo="dpo", preference_data=data, prompts_per_step=4, steps=2))
    seen = []
    for step in range(2):
        rollout, _, _ = trainer.collect(step, jax.random.key(step))
        assert rollout.group_size == 2 and rollout.batch_size == 8
        np.testing.assert_array_equal(np.asarray(rollout.rewards).reshape(-1, 2), [[1, 0]] * 4)
        seen += list(np.asarray(rollout.prompt_ids)[::2])
    assert sorted(seen) == list(range(8)), "one pass sees every pair once"
    metrics = trainer.step(0)
    assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0


@pytest.mark.parametrize("argv, message", [
    (["train", "--algo", "grpo", "--preference-data", "tests/fixtures/preference_pairs.jsonl"],
     "--preference-data needs a pairwise algorithm; grpo is not"),
    (["train", "--algo", "dpo", "--preference-data", "/no/such.jsonl"], "--preference-data /no/such.jsonl is not a file"),
    (["train", "--algo", "dpo", "--preference-data", "tests/fixtures/preference_pairs.jsonl", "--prompts-per-step", "9"],
     "--prompts-per-step 9 is more than the 8 pairs"),
])
def test_preference_data_errors(capsys, argv, message):
    assert cli.main(argv + ["--sft-steps", "0", "--steps", "1", "--run-dir", "/tmp/rlzoo-pref-err"]) == 2
    assert message in capsys.readouterr().err


def test_paired_estimator_trains(tmp_path):
    """--advantage: the loss of one algorithm on another's estimator, end to end."""
    trainer = Trainer(run_config(tmp_path, algo="cispo", advantage="bnpo", steps=1))
    assert trainer.algo.name == "cispo+bnpo"
    metrics = trainer.step(0)
    assert np.isfinite(metrics["loss"])


def test_a_filter_that_is_switched_off_draws_one_batch(tmp_path):
    """DAPO with dynamic_sampling=False: its group_filter returns None, so the
    step samples exactly one batch of prompts."""
    trainer = Trainer(run_config(tmp_path, algo="dapo", max_sampling_rounds=4),
                      get_algorithm("dapo").make_config(dynamic_sampling=False))
    rollout, _, rounds = trainer.collect(0, jax.random.key(0))
    assert rounds == 1 and rollout.batch_size == trainer.run.completions_per_step


@pytest.mark.parametrize("settings, algo_settings, behaviour, reference", [
    ({}, {"kl_coef": 0.0}, False, False),            # GRPO at kl_coef 0, one pass: neither forward runs
    ({}, {"kl_coef": 0.04}, False, True),            # the KL term reads the reference
    ({"epochs": 2}, {"kl_coef": 0.0}, True, False),  # a second pass is off-policy: recompute
    ({"minibatches": 2}, {"kl_coef": 0.0}, True, False),  # so is the second minibatch
    ({"top_k": 5}, {"kl_coef": 0.0}, True, False),   # the sampler's log-probs are of the truncated distribution
])
def test_only_the_forwards_the_run_reads(tmp_path, settings, algo_settings, behaviour, reference):
    trainer = Trainer(run_config(tmp_path, **settings), get_algorithm("grpo").Config(**algo_settings))
    assert (trainer.forwards.behaviour is not None, trainer.forwards.reference is not None) == (behaviour, reference)
    metrics = trainer.step(0)
    assert ("kl" in metrics) == reference, "KL to the reference is logged exactly when it is computed"
    assert all(metrics[f"time_{stage}_s"] >= 0 for stage in ("sample", "forwards", "update"))


def test_an_on_policy_update_equals_the_one_with_recomputed_logprobs(tmp_path):
    """stop_gradient(current log-probs) in place of the recompute: the same
    loss and gradient, since both are the current policy's log-probs."""
    trainer = Trainer(run_config(tmp_path), get_algorithm("grpo").Config(kl_coef=0.0))
    examples = trainer.task.train_examples(np.random.default_rng(0), 4)
    sampled = trainer.sample(examples, 4, jax.random.key(1)).with_normaliser()
    current = jax.jit(policy_stats_fn(trainer.graphdef, frozenset(), trainer.run.temperature))
    recomputed = sampled.replace(behaviour_logprobs=jax.numpy.where(
        sampled.loss_mask, current(trainer.state.params, sampled.tokens).logprobs, 0.0))
    assert np.abs(np.asarray(recomputed.behaviour_logprobs - sampled.behaviour_logprobs)).max() > 0, \
        "the sampler's log-probs come from another computation"
    adv = jax.numpy.where(sampled.loss_mask, jax.random.normal(jax.random.key(2), sampled.loss_mask.shape), 0.0)
    loss = algorithm_loss(trainer.algo, trainer.cfg)
    on = jax.jit(make_update(trainer.graphdef, loss, optax.sgd(1.0), on_policy=True))
    off = jax.jit(make_update(trainer.graphdef, loss, optax.sgd(1.0)))
    new_on, m_on = on(trainer.state, sampled, adv)
    new_off, m_off = off(trainer.state, recomputed, adv)
    np.testing.assert_allclose(float(m_on["loss"]), float(m_off["loss"]), rtol=1e-5, atol=1e-7)
    assert float(m_on["ratio_max"]) == 1.0 and float(m_on["clip_frac"]) == 0.0
    assert_params_close(jax.tree.leaves(jax.device_get(new_on.params)), jax.tree.leaves(jax.device_get(new_off.params)),
                        rtol=1e-4, atol=1e-6)


class ConstantTask:
    """A user's own task object: fixed prompts, reward 1 for any completion."""

    name = "constant"
    reward_names = ("correct",)

    def train_examples(self, rng, n):
        return [Example(prompt=f"{int(rng.integers(10))}+1=", answer="", solution="") for _ in range(n)]

    def eval_examples(self):
        return [Example(prompt="1+1=", answer="", solution="")] * 4

    def reward(self, completion, example):
        return {"reward": 1.0, "correct": 1.0}

    def answer(self, completion):
        return None


def test_a_task_object_and_fixed_length_completions(tmp_path):
    trainer = Trainer(run_config(tmp_path, stop_at_eos=False, max_new_tokens=6), task=ConstantTask())
    examples = trainer.task.train_examples(np.random.default_rng(0), 2)
    rollout = trainer.sample(examples, 4, jax.random.key(0))
    assert (np.asarray(rollout.loss_mask).sum(axis=1) == 6).all(), "no completion stops before --max-new-tokens"
    assert (np.asarray(rollout.rewards) == 1.0).all(), "the task object scores the rows"
    assert trainer.evaluate()["eval_accuracy"] == 1.0
    with pytest.raises(TypeError, match="task must implement rlzoo.tasks.Task"):
        Trainer(run_config(tmp_path), task=object())
