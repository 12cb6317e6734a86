"""rDPO: Provably Robust DPO under random preference-label flips.

Paper: Chowdhury, Kini, Natarajan, "Provably Robust DPO: Aligning Language
Models with Noisy Feedback", ICML 2024, arXiv:2403.00409 (section 3,
eq. 7–8).

Each observed label is the true one flipped with known probability ε < ½.
With the DPO margin Δ = h_θ(y_w) − h_θ(y_l), h_θ = Σ_t log π_θ − log π_ref,
and ℓ(z) = −log σ(z), rDPO replaces DPO's loss ℓ(βΔ) by the de-biased

    L̂ = [(1 − ε) ℓ(βΔ) − ε ℓ(−βΔ)] / (1 − 2ε)

which is an unbiased estimate of the clean-label DPO loss: if the observed
pair is flipped with probability ε, (1 − ε) L̂(Δ) + ε L̂(−Δ) = ℓ(βΔ)
exactly (the ℓ(−βΔ) terms cancel and the ℓ(βΔ) terms sum to (1 − 2ε)ℓ(βΔ)).
Unlike conservative DPO (label smoothing, weights (1 − ε, +ε)), the second
weight is negative, so L̂ is unbounded below as Δ → +∞ (it is a de-biased
estimate, not a proper loss). ε = 0 is DPO.

Equivalents: TRL `DPOTrainer(loss_type="robust", label_smoothing=ε)`.
Verified against the paper's eq. 8 and TRL 1.16 `dpo_trainer.py` (`robust`
branch); tests check unbiasedness numerically and TRL parity.
"""

from __future__ import annotations

import dataclasses

from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.Pairing):
    beta: float = pieces.setting(0.1, gt=0.0)
    """β: inverse temperature of the implicit reward β log π_θ/π_ref."""
    label_flip_rate: float = pieces.setting(0.1, ge=0.0, lt=0.5)
    """ε ∈ [0, ½): the known probability that a preference label is flipped
    (the paper's experiments use 0.1 with β = 0.1)."""


def loss(stats, rollout, adv, cfg: Config, state):
    """Mean over decided pairs of [(1 − ε)ℓ(βΔ) − εℓ(−βΔ)] / (1 − 2ε)."""
    eps = cfg.label_flip_rate
    scores = ops.pair_scores(stats, rollout)
    per_pair = ops.logistic_pair_loss(
        cfg.beta * scores.margin, (1.0 - eps) / (1.0 - 2.0 * eps), -eps / (1.0 - 2.0 * eps)
    )
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta)


register(Algorithm(
    name="rdpo",
    family="preference",
    paper="Provably Robust DPO: Aligning Language Models with Noisy Feedback (Chowdhury et al., 2024, arXiv:2403.00409)",
    Config=Config,
    advantages=ops.pair_sign_targets,
    loss=loss,
    needs=frozenset({"ref_logprobs"}),
    pairwise=True,
    prepare=pair_groups,
))
