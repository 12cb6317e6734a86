"""Numerical parity with TRL's GRPO-family losses (trl 1.16, PyTorch CPU).

TRL's actual loss code is called: `GRPOTrainer._compute_loss` (and
`trl.experimental.gmpo.GMPOTrainer._compute_loss`) run on a light stand-in
object instead of a trainer. The stand-in's `_get_per_token_logps_and_entropies`
returns a leaf tensor of per-token log-probs, so TRL's loss and its gradient
with respect to those log-probs come out of TRL's own code, and are compared
with the zoo's loss and gradient on the same random inputs.

Layout: TRL keeps the completion apart from the prompt ([B, Tc]); the zoo's
rollout is [B, Tc + 1] with one untrained prompt position in front.

TRL's conventions are set explicitly on the zoo side: group std with ddof 1
plus 1e-4 (`std_eps=1e-4`), the k3 KL estimator, the same KL weight (TRL's
`beta` is the zoo's `kl_coef`) and clip bounds (TRL's `epsilon` /
`epsilon_high` are `clip_eps_low` / `clip_eps_high`), for Dr.GRPO the
constant `norm_len = max_completion_length`, and with beta > 0 TRL's own
default KL weighting: `GRPOConfig.use_bias_correction_kl` (True in 1.16)
multiplies each token's k3 by the differentiable, unclipped ratio
exp(log π_θ − log π_old), which is the zoo's `kl_importance_weighted=True`
(off by default; both settings are checked against TRL). TRL's
advantages are computed here with TRL's formula (its `nanstd`, + 1e-4) and
checked against the zoo's before being fed to TRL's loss.

Where TRL differs from the papers (documented, not tested as errors):
- `loss_type="grpo"` is GRPO's seq-mean-token-mean; TRL's "bnpo" is only an
  aggregation mode (token-mean over the local batch), not the BNPO paper
  (the zoo's `bnpo` is the paper's Beta-normalised estimator, paired with
  GRPO's loss); it is compared with the zoo's GRPO under
  `aggregation="token-mean"`.
- `loss_type="cispo"` caps the IS weight at `epsilon_high` (an absolute value,
  ScaleRL's ε_max) with no lower bound; the zoo's CISPO uses 1 + ε_high^IS.
- GSPO is `loss_type="grpo"` with `importance_sampling_level="sequence"`;
  there TRL 1.16 weights the KL by the sequence ratio broadcast over the
  tokens (trl issue #6586), the zoo by each token's ratio, so GSPO with a KL
  term is compared with TRL's weighting off.
- TRL does not clamp log-ratios or k3 (the zoo clamps at ±20 and 10); the
  inputs here stay far from both.
- TRL's GMPO gives a fully masked row the loss −Â_i (its geometric mean of
  nothing is 1); the zoo gives such a row 0. The inputs here have no empty
  row for GMPO.
- Dynamic sampling (DAPO) is not in TRL's loss; the random rewards here have
  no all-equal group, so it changes nothing.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
pytest.importorskip("trl")

import jax.numpy as jnp  # noqa: E402
from trl.experimental.gmpo.gmpo_trainer import GMPOTrainer  # noqa: E402
from trl.rewards import get_soft_overlong_punishment  # noqa: E402
from trl.trainer.grpo_config import GRPOConfig  # noqa: E402
from trl.trainer.grpo_trainer import GRPOTrainer  # noqa: E402
from trl.trainer.utils import nanstd  # noqa: E402

from rlzoo import get_algorithm, ops  # noqa: E402
from rlzoo.rollout import PolicyStats, make_rollout  # noqa: E402
from rlzoo.testing import loss_and_grad  # noqa: E402

B, K, TC = 8, 4, 7
"""Rows, rows per group, completion length (the zoo's T is TC + 1)."""
TRL_STD_EPS = 1e-4
SEEDS = [0, 1, 2]
TRL_WEIGHTS_KL = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}["use_bias_correction_kl"]
"""TRL's own default for multiplying the KL term by the importance ratio."""
KL_WEIGHTING = [pytest.param(TRL_WEIGHTS_KL, id="trl-default-kl-weighting"),
                pytest.param(not TRL_WEIGHTS_KL, id="other-kl-weighting")]


# --------------------------------------------------------------------------
# Random inputs shared by both sides
# --------------------------------------------------------------------------

def make_data(seed: int, noise: float = 0.3, empty_row: bool = False, rewards=None):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, TC + 1, B)
    if empty_row:
        lengths[3] = 0
    mask = (np.arange(TC)[None, :] < lengths[:, None]).astype(np.float32)
    old = -rng.exponential(1.0, (B, TC)).astype(np.float32)
    logp = (old + rng.normal(0, noise, (B, TC))).astype(np.float32)
    ref = (old + rng.normal(0, 0.2, (B, TC))).astype(np.float32)
    if rewards is None:
        rewards = rng.normal(0, 1, B).astype(np.float32)
    return types.SimpleNamespace(
        mask=mask, old=old, logp=logp, ref=ref, lengths=lengths,
        rewards=np.asarray(rewards, np.float32),
    )


def _pad(x):
    return np.pad(x, ((0, 0), (1, 0)))


def zoo_inputs(data):
    rollout = make_rollout(
        np.zeros((B, TC + 1), np.int32),
        _pad(data.mask).astype(bool),
        data.rewards,
        _pad(data.old * data.mask),
        group_size=K,
        ref_logprobs=_pad(data.ref * data.mask),
        truncated=np.zeros(B, bool),
    )
    return rollout, PolicyStats(logprobs=jnp.asarray(_pad(data.logp)))


def zoo_loss_and_grad(name, cfg, data):
    rollout, stats = zoo_inputs(data)
    algo = get_algorithm(name)
    adv, _ = algo.advantages(rollout, cfg, algo.init_state(cfg))
    loss, _, grads = loss_and_grad(algo, cfg, stats, rollout, adv=adv)
    row_adv = np.asarray(ops.sequence_mean(adv, rollout.loss_mask))
    return float(loss), np.asarray(grads.logprobs)[:, 1:], row_adv


# --------------------------------------------------------------------------
# TRL side: its advantage formula and its loss code on a stand-in trainer
# --------------------------------------------------------------------------

def trl_advantages(rewards: np.ndarray, scale: bool = True) -> np.ndarray:
    """GRPOTrainer's group advantage: R − mean_g, ÷ (nanstd_g + 1e-4) unless scale_rewards='none'."""
    r = torch.tensor(rewards).view(-1, K)
    adv = r - torch.nanmean(r, dim=1, keepdim=True)
    if scale:
        adv = adv / (nanstd(r, dim=1).unsqueeze(1) + TRL_STD_EPS)
    return adv.reshape(-1).numpy()


class StandIn:
    """The attributes `_compute_loss` reads, with the policy replaced by fixed log-probs."""

    def __init__(self, logps, *, loss_type="grpo", eps_low=0.2, eps_high=0.2, beta=0.0,
                 level="token", tau_pos=1.0, tau_neg=1.05, weight_kl=TRL_WEIGHTS_KL):
        self._logps = logps
        self.loss_type = loss_type
        self.epsilon_low, self.epsilon_high = eps_low, eps_high
        self.beta = beta
        self.importance_sampling_level = level
        self.max_completion_length = TC
        self.top_entropy_quantile = 1.0
        self.off_policy_mask_threshold = None
        self.use_vllm = False
        self.vllm_importance_sampling_correction = False
        self.aux_loss_enabled = False
        self._entropy_bonus_enabled = False
        self.current_gradient_accumulation_steps = 1
        self.model = types.SimpleNamespace(training=True)
        self.accelerator = types.SimpleNamespace(
            num_processes=1,
            gather=lambda x: x,
            gather_for_metrics=lambda x: x,
            reduce=lambda x, reduction="sum": x,
        )
        self.args = types.SimpleNamespace(
            delta=None, use_bias_correction_kl=weight_kl, steps_per_generation=1,
            sapo_temperature_pos=tau_pos, sapo_temperature_neg=tau_neg,
        )
        self._metrics = collections.defaultdict(lambda: collections.defaultdict(list))

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, **kwargs):
        return self._logps, torch.zeros_like(self._logps), None


def trl_loss_and_grad(data, advantages, trainer=GRPOTrainer, **settings):
    logps = torch.tensor(data.logp, requires_grad=True)
    mask = torch.tensor(data.mask)
    inputs = {
        "prompt_ids": torch.zeros((B, 1), dtype=torch.long),
        "prompt_mask": torch.ones((B, 1), dtype=torch.long),
        "completion_ids": torch.zeros((B, TC), dtype=torch.long),
        "completion_mask": mask,
        "advantages": torch.tensor(advantages),
        "old_per_token_logps": torch.tensor(data.old),
        "ref_per_token_logps": torch.tensor(data.ref),
        "num_items_in_batch": mask.sum(),
    }
    loss = trainer._compute_loss(StandIn(logps, **settings), None, inputs)
    loss.backward()
    return loss.detach().item(), logps.grad.numpy()


def assert_parity(zoo, trl, mask, rtol=2e-5, atol=2e-6):
    zoo_loss, zoo_grad, _ = zoo
    trl_loss, trl_grad = trl
    np.testing.assert_allclose(zoo_loss, trl_loss, rtol=rtol, atol=atol)
    # Off-mask TRL's gradient is 0 (the mask multiplies); so is the zoo's.
    np.testing.assert_allclose(zoo_grad * mask, trl_grad, rtol=rtol, atol=atol)
    assert np.abs(zoo_grad).max() > 0, "degenerate test input: zero gradient"


def check_advantages(zoo, data, scale=True):
    _, _, row_adv = zoo
    expected = trl_advantages(data.rewards, scale)
    nonempty = data.lengths > 0
    np.testing.assert_allclose(row_adv[nonempty], expected[nonempty], rtol=1e-5, atol=1e-6)
    return expected


# --------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weight_kl", KL_WEIGHTING)
def test_grpo_matches_trl_grpo(seed, weight_kl):
    data = make_data(seed, empty_row=True)
    cfg = get_algorithm("grpo").Config(std_eps=TRL_STD_EPS, kl_coef=0.04, kl_importance_weighted=weight_kl)
    zoo = zoo_loss_and_grad("grpo", cfg, data)
    adv = check_advantages(zoo, data)
    trl = trl_loss_and_grad(data, adv, loss_type="grpo", beta=0.04, weight_kl=weight_kl)
    assert_parity(zoo, trl, data.mask)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weight_kl", KL_WEIGHTING)
def test_grpo_token_mean_matches_trl_bnpo_aggregation(seed, weight_kl):
    """TRL's "bnpo" loss_type is GRPO with token-mean aggregation (not the BNPO paper)."""
    data = make_data(seed, empty_row=True)
    cfg = get_algorithm("grpo").Config(
        std_eps=TRL_STD_EPS, kl_coef=0.04, aggregation="token-mean", kl_importance_weighted=weight_kl,
    )
    zoo = zoo_loss_and_grad("grpo", cfg, data)
    adv = check_advantages(zoo, data)
    trl = trl_loss_and_grad(data, adv, loss_type="bnpo", beta=0.04, weight_kl=weight_kl)
    assert_parity(zoo, trl, data.mask)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weight_kl", KL_WEIGHTING)
def test_dr_grpo_matches_trl_dr_grpo(seed, weight_kl):
    data = make_data(seed, empty_row=True)
    cfg = get_algorithm("dr_grpo").Config(kl_coef=0.04, norm_len=TC, kl_importance_weighted=weight_kl)
    zoo = zoo_loss_and_grad("dr_grpo", cfg, data)
    adv = check_advantages(zoo, data, scale=False)  # TRL scale_rewards="none"
    trl = trl_loss_and_grad(data, adv, loss_type="dr_grpo", beta=0.04, weight_kl=weight_kl)
    assert_parity(zoo, trl, data.mask)


def test_trl_weights_the_kl_by_default_and_the_zoo_does_not():
    """TRL 1.16's default multiplies the KL term by the ratio; the zoo's GRPO (the
    paper's objective) does not. On-policy the ratio is 1, so the two losses
    agree, yet the gradients differ by β·w_t·k3_t, the ratio's own gradient
    k3_t·∇log π_θ (w_t: the token's aggregation weight)."""
    assert TRL_WEIGHTS_KL is True
    assert get_algorithm("grpo").Config().kl_importance_weighted is False
    data = make_data(0, empty_row=True)
    data.logp = data.old.copy()  # on-policy: ratio 1
    cfg = get_algorithm("grpo").Config(std_eps=TRL_STD_EPS, kl_coef=0.04)
    zoo = zoo_loss_and_grad("grpo", cfg, data)
    zoo_loss, zoo_grad, _ = zoo
    adv = check_advantages(zoo, data)
    trl_loss, trl_grad = trl_loss_and_grad(data, adv, loss_type="grpo", beta=0.04)
    np.testing.assert_allclose(zoo_loss, trl_loss, rtol=2e-5, atol=2e-6)
    lengths = np.maximum(data.mask.sum(1, keepdims=True), 1)
    k3 = np.exp(data.ref - data.logp) - (data.ref - data.logp) - 1
    extra = 0.04 * k3 * data.mask / (lengths * B)
    assert np.abs(extra).max() > 1e-4, "degenerate test input: KL too small to tell the gradients apart"
    np.testing.assert_allclose(trl_grad - zoo_grad * data.mask, extra, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_dapo_matches_trl_dapo_with_soft_overlong_punishment(seed):
    """DAPO's loss and its overlong shaping: TRL's `dapo` loss on rewards that include
    TRL's `get_soft_overlong_punishment` reward (L_max = 6, L_cache = 3 tokens)."""
    data = make_data(seed)
    punish = get_soft_overlong_punishment(max_completion_len=6, soft_punish_cache=3)
    shaped = data.rewards + np.asarray(punish([[0] * int(n) for n in data.lengths]), np.float32)
    assert np.any(shaped != data.rewards), "degenerate test input: no row is punished"
    cfg = get_algorithm("dapo").Config(
        std_eps=TRL_STD_EPS, max_response_length=6, overlong_buffer=3, dynamic_sampling=False,
    )
    zoo = zoo_loss_and_grad("dapo", cfg, data)
    _, _, row_adv = zoo
    adv = trl_advantages(shaped)
    np.testing.assert_allclose(row_adv, adv, rtol=1e-5, atol=1e-6)
    assert_parity(zoo, trl_loss_and_grad(data, adv, loss_type="dapo", eps_low=0.2, eps_high=0.28), data.mask)


@pytest.mark.parametrize("seed", SEEDS)
def test_cispo_matches_trl_cispo(seed):
    """TRL's `epsilon_high` is the absolute cap on the IS weight: 1 + ε_high^IS here. A cap
    of 2 (rather than the default 5) makes some weights hit it on these inputs."""
    data = make_data(seed, noise=1.0, empty_row=True)
    assert np.any(np.exp(data.logp - data.old)[data.mask > 0] > 2.0)
    cfg = get_algorithm("cispo").Config(std_eps=TRL_STD_EPS, eps_high_is=1.0)
    zoo = zoo_loss_and_grad("cispo", cfg, data)
    adv = check_advantages(zoo, data)
    assert_parity(zoo, trl_loss_and_grad(data, adv, loss_type="cispo", eps_high=2.0), data.mask)


@pytest.mark.parametrize("seed", SEEDS)
def test_cispo_with_kl_matches_trl_cispo_default_kl_weighting(seed):
    """With beta > 0 TRL's CISPO weights the KL by the unclipped ratio, not its capped IS weight."""
    data = make_data(seed, noise=1.0, empty_row=True)
    cfg = get_algorithm("cispo").Config(std_eps=TRL_STD_EPS, eps_high_is=1.0, kl_coef=0.04,
                                        kl_importance_weighted=TRL_WEIGHTS_KL)
    zoo = zoo_loss_and_grad("cispo", cfg, data)
    adv = check_advantages(zoo, data)
    assert_parity(zoo, trl_loss_and_grad(data, adv, loss_type="cispo", eps_high=2.0, beta=0.04), data.mask)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weight_kl", KL_WEIGHTING)
def test_sapo_matches_trl_sapo(seed, weight_kl):
    data = make_data(seed, noise=0.8, empty_row=True)
    cfg = get_algorithm("sapo").Config(std_eps=TRL_STD_EPS, kl_coef=0.04, kl_importance_weighted=weight_kl)
    zoo = zoo_loss_and_grad("sapo", cfg, data)
    adv = check_advantages(zoo, data)
    trl = trl_loss_and_grad(data, adv, loss_type="sapo", beta=0.04, tau_pos=1.0, tau_neg=1.05, weight_kl=weight_kl)
    assert_parity(zoo, trl, data.mask)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kl_coef", [0.0, 0.04])
def test_gspo_matches_trl_sequence_level_grpo(seed, kl_coef):
    # Log-ratio noise of the order of ε, so that some responses are clipped and some are not.
    data = make_data(seed, noise=6e-4, empty_row=True)
    cfg = get_algorithm("gspo").Config(std_eps=TRL_STD_EPS, kl_coef=kl_coef)
    zoo = zoo_loss_and_grad("gspo", cfg, data)
    adv = check_advantages(zoo, data)
    # TRL weights the KL by the sequence ratio here (see the module docstring): its weighting off.
    trl = trl_loss_and_grad(data, adv, loss_type="grpo", level="sequence", eps_low=3e-4, eps_high=4e-4,
                            beta=kl_coef, weight_kl=False)
    assert_parity(zoo, trl, data.mask)


@pytest.mark.parametrize("seed", SEEDS)
def test_gmpo_matches_trl_experimental_gmpo(seed):
    data = make_data(seed, noise=0.5)  # some token log-ratios beyond ±0.4
    cfg = get_algorithm("gmpo").Config(std_eps=TRL_STD_EPS, kl_coef=0.04)
    zoo = zoo_loss_and_grad("gmpo", cfg, data)
    adv = check_advantages(zoo, data)
    trl = trl_loss_and_grad(data, adv, trainer=GMPOTrainer, eps_low=0.4, eps_high=0.4, beta=0.04)
    assert_parity(zoo, trl, data.mask)


def test_stand_in_reaches_trl_clipping():
    """Guard against a vacuous stand-in: TRL's clipped loss must differ from its unclipped one
    on these inputs, so the parity tests above exercise the clip."""
    data = make_data(0, noise=0.8)
    adv = trl_advantages(data.rewards)
    clipped = trl_loss_and_grad(data, adv, loss_type="dapo", eps_low=0.2, eps_high=0.28)
    unclipped = trl_loss_and_grad(data, adv, loss_type="dapo", eps_low=1e6, eps_high=1e6)
    assert abs(clipped[0] - unclipped[0]) > 1e-4
    assert np.abs(clipped[1] - unclipped[1]).max() > 1e-4
