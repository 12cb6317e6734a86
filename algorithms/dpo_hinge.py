"""DPO-hinge: the hinge (SLiC / RSO) loss on the DPO log-ratio margin.

Papers: Zhao, Joshi, Liu, Khalman, Saleh, Liu, "SLiC-HF: Sequence Likelihood
Calibration with Human Feedback", 2023, arXiv:2305.10425 (eq. 1, the
calibration hinge); Liu, Zhao, Joshi, Khalman, Saleh, Liu, Liu, "Statistical
Rejection Sampling Improves Preference Optimization" (RSO), ICLR 2024,
arXiv:2309.06657 (section 4, the hinge loss on normalised likelihoods).

With the DPO margin Δ = h_θ(y_w) − h_θ(y_l), h_θ = Σ_t log π_θ − log π_ref,

    L = max(0, 1 − βΔ)

a support-vector loss: pairs whose scaled margin already exceeds 1 give no
gradient, the others push Δ up with constant slope β. 1/β is the margin in
log-ratio units (SLiC's δ). SLiC's calibration loss is written on raw
log-likelihoods (no reference); the reference-normalised form is RSO's
`hinge-norm`, which is what TRL implements and this file follows.

Closest relative: DPO (same margin, logistic link). Equivalents: TRL
`DPOTrainer(loss_type="hinge", beta=β)`. Verified against TRL 1.16
`trl/trainer/dpo_trainer.py` (`hinge` branch; parity test in
tests/parity/test_trl_dpo.py).
"""

from __future__ import annotations

import dataclasses

import jax

from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.Pairing):
    beta: float = pieces.setting(0.1, gt=0.0)
    """β: scale of the margin; pairs with βΔ ≥ 1 are satisfied (TRL default 0.1)."""


def loss(stats, rollout, adv, cfg: Config, state):
    """Mean over decided pairs of max(0, 1 − βΔ)."""
    scores = ops.pair_scores(stats, rollout)
    per_pair = jax.nn.relu(1.0 - cfg.beta * scores.margin)
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta)


register(Algorithm(
    name="dpo_hinge",
    family="preference",
    paper="Statistical Rejection Sampling Improves Preference Optimization (Liu et al., 2023, arXiv:2309.06657); SLiC-HF (Zhao et al., 2023, arXiv:2305.10425)",
    Config=Config,
    advantages=ops.pair_sign_targets,
    loss=loss,
    needs=frozenset({"ref_logprobs"}),
    pairwise=True,
    prepare=pair_groups,
))
