"""SimPO: Simple Preference Optimization with a reference-free reward.

Paper: Meng, Xia, Chen, "SimPO: Simple Preference Optimization with a
Reference-Free Reward", NeurIPS 2024, arXiv:2405.14734 (section 2, eq. 6).

The implicit reward is the length-normalised log-likelihood of the policy
itself, with no reference model, and the Bradley–Terry margin must exceed a
target γ:

    r(y) = (β/|y|) Σ_t log π_θ(y_t | y_<t)
    L    = −(1 − ε) log σ(r(y_w) − r(y_l) − γ) − ε log σ(−(r(y_w) − r(y_l) − γ))

(ε = label smoothing, 0 in the paper). Differs from DPO in three ways: no
π_ref, the log-likelihood is averaged over the response's tokens, and the
margin γ. With γ = 0 and no length normalisation SimPO is DPO with
log π_ref ≡ 0.

Defaults: the official trainer's β = 2.0 and γ/β = 0.25 (γ = 0.5); the
paper tunes β ∈ [2, 10] and γ/β ∈ [0.3, 0.8] per model (e.g. Mistral-7B
base: β = 2.0, γ = 1.6). Equivalents: TRL experimental
`CPOTrainer(loss_type="simpo", cpo_alpha=0)`. Verified against
princeton-nlp/SimPO `scripts/simpo_trainer.py` (`simpo_loss`,
`average_log_prob=True`) and `scripts/simpo_config.py`.
"""

from __future__ import annotations

import dataclasses

from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.Pairing):
    beta: float = pieces.setting(2.0, gt=0.0)
    """β: scale of the reference-free reward (official default 2.0)."""
    gamma: float = 0.5
    """γ: target reward margin (official default γ/β = 0.25)."""
    length_normalise: bool = True
    """Average the log-likelihood over the response's tokens (the paper); sum it when False."""
    label_smoothing: float = pieces.setting(0.0, ge=0.0, le=1.0)
    """ε: assumed label-flip probability (0 in the paper)."""


def loss(stats, rollout, adv, cfg: Config, state):
    """Mean over decided pairs of the smoothed −log σ(βΔ̄ − γ), Δ̄ the mean log-likelihood margin."""
    scores = ops.pair_scores(stats, rollout, reference=False, length_normalise=cfg.length_normalise)
    eps = cfg.label_smoothing
    per_pair = ops.logistic_pair_loss(cfg.beta * scores.margin - cfg.gamma, 1.0 - eps, eps)
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta)


register(Algorithm(
    name="simpo",
    family="preference",
    paper="SimPO: Simple Preference Optimization with a Reference-Free Reward (Meng et al., 2024, arXiv:2405.14734)",
    Config=Config,
    advantages=ops.pair_sign_targets,
    loss=loss,
    pairwise=True,
    prepare=pair_groups,
))
