"""RPO: Regularized Preference Optimization (DPO + SFT on the chosen response).

Paper: Liu, Lu, Zhang, Liu, Guo, Yang, Blanchet, Wang, "Provably Mitigating
Overoptimization in RLHF: Your SFT Loss is Implicitly an Adversarial
Regularizer", NeurIPS 2024, arXiv:2405.16436 (Algorithm 2, section 4).

The adversarial (pessimistic) reward objective of the paper's Algorithm 1 is
equivalent to DPO plus an imitation loss on a baseline distribution, which
in practice is the chosen responses:

    L = −log σ(βΔ) + η β L_SFT(y_w)
    L_SFT(y_w) = −Σ_t log π_θ(y_w,t | y_w,<t)               ("sum", the paper)
               = −(1/|y_w|) Σ_t log π_θ(y_w,t | y_w,<t)     ("mean")

with Δ the DPO log-ratio margin. η = 0 is DPO; the SFT part contributes
exactly −ηβ∇log π_θ(y_w) to the gradient, pulling the chosen likelihood up
where DPO alone can push both likelihoods down. The official code has both
forms: alignment-handbook `rpo_trainer.py` subtracts η·β·Σ_t log π(y_w)
("sum"); its OpenRLHF variant adds `nll_loss_coef` × the per-sequence mean
NLL ("mean" with η β = nll_loss_coef). Paper defaults (zephyr-7b-beta
configs in the official repo): β = 0.01, η = 0.005.

Equivalents: TRL `DPOTrainer(loss_type=["sigmoid", "sft"], loss_weights=[1, ηβ])`
(TRL's `sft` averages the NLL over all chosen tokens of the batch, which
equals "mean" only when chosen lengths are equal; the older TRL `rpo_alpha`
was the same token mean). Verified against YSLIU627/Regularized-Preference-
Optimization (`alignment-handbook/scripts/rpo_trainer.py`,
`OpenRLHF/openrlhf/trainer/dpo_trainer.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.Pairing):
    beta: float = pieces.setting(0.01, gt=0.0)
    """β: inverse temperature of the implicit reward (paper: 0.01)."""
    eta: float = pieces.setting(0.005, ge=0.0)
    """η: weight of the SFT regulariser, which enters as η·β·L_SFT (paper: 0.005)."""
    sft_normalisation: Literal["sum", "mean"] = "sum"
    """L_SFT as the sequence NLL ("sum", the paper) or its per-token mean ("mean")."""


def loss(stats, rollout, adv, cfg: Config, state):
    """Mean over decided pairs of −log σ(βΔ) + ηβ·L_SFT(y_w)."""
    scores = ops.pair_scores(stats, rollout)
    nll = -ops.sequence_scores(
        stats.logprobs, rollout, reference=False, length_normalise=cfg.sft_normalisation == "mean"
    )
    sft, _ = ops.split_pairs(nll, scores.sign)
    per_pair = ops.logistic_pair_loss(cfg.beta * scores.margin) + cfg.eta * cfg.beta * sft
    sft_loss = ops.aggregate_pairs(sft, scores.weight, rollout)
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta, {"sft_loss": sft_loss})


register(Algorithm(
    name="rpo",
    family="preference",
    paper="Provably Mitigating Overoptimization in RLHF: Your SFT Loss is Implicitly an Adversarial Regularizer (Liu et al., 2024, arXiv:2405.16436)",
    Config=Config,
    advantages=ops.pair_sign_targets,
    loss=loss,
    needs=frozenset({"ref_logprobs"}),
    pairwise=True,
    prepare=pair_groups,
))
