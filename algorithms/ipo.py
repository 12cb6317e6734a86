"""IPO: Identity Preference Optimization (ΨPO with Ψ = identity).

Paper: Azar, Guo, Piot, Munos, Rowland, Valko, Calandriello, "A General
Theoretical Paradigm to Understand Learning from Human Preferences",
AISTATS 2024, arXiv:2310.12036 (section 5, eq. 17).

Pairs are groups of two rows, chosen y_w = the higher reward. With the
policy/reference log-ratio margin

    h_θ(y) = Σ_t log π_θ(y_t | y_<t) − log π_ref(y_t | y_<t)      (trained tokens)
    Δ      = h_θ(y_w) − h_θ(y_l)

IPO regresses the margin onto a fixed target instead of pushing it to
infinity:

    L = (Δ − 1/(2τ))²        (τ = `beta`, the regularisation strength)

so the minimiser over Δ is exactly Δ* = 1/(2τ) whatever the data; DPO's
logistic loss has no finite minimiser on a deterministic preference. With
`length_normalise` (the default) h_θ is the per-token mean of the log-ratio
instead of the sum: TRL's IPO does this and states the IPO authors confirmed
the paper's results used the normalised form; eq. 17 itself is written with
sequence sums (`length_normalise=False`).

Closest relative: DPO (logistic link on βΔ) — IPO swaps the link for a
squared loss with target 1/(2τ). Equivalents: TRL
`DPOTrainer(loss_type="ipo", beta=τ)` (length-normalised). Verified against
the paper's eq. 17 and TRL 1.16 `trl/trainer/dpo_trainer.py` (`ipo` branch);
tests/parity/test_trl_dpo.py checks loss and gradient parity.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.Pairing):
    beta: float = pieces.setting(0.1, gt=0.0)
    """τ: regularisation strength; the target margin is 1/(2τ)."""
    length_normalise: bool = True
    """Average the log-ratio over the response's tokens (TRL and the authors'
    experiments) instead of summing it (eq. 17 as printed)."""


def loss(stats, rollout, adv, cfg: Config, state):
    """Mean over decided pairs of (Δ − 1/(2τ))²."""
    scores = ops.pair_scores(stats, rollout, length_normalise=cfg.length_normalise)
    per_pair = jnp.square(scores.margin - 0.5 / cfg.beta)
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta)


register(Algorithm(
    name="ipo",
    family="preference",
    paper="A General Theoretical Paradigm to Understand Learning from Human Preferences (Azar et al., 2023, arXiv:2310.12036)",
    Config=Config,
    advantages=ops.pair_sign_targets,
    loss=loss,
    needs=frozenset({"ref_logprobs"}),
    pairwise=True,
    prepare=pair_groups,
))
