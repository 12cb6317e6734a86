"""SPPO-hard: Self-Play Preference Optimization with hard win probabilities.

Paper: Wu, Sun, Yuan, Ji, Yang, Gu, "Self-Play Preference Optimization for
Language Model Alignment", 2024, arXiv:2405.00675 (Algorithm 1, eq. 4.7).

SPPO regresses each response's log-ratio against the current iterate onto
its estimated win rate over the policy:

    ( log π_θ(y)/π_t(y) − η (P̂(y ≻ π_t) − ½) )²

The "hard" pairwise variant sets P̂ = 1 for the chosen and 0 for the
rejected response of a labelled pair, and η = 1/β:

    L = (h_θ(y_w) − 1/(2β))² + (h_θ(y_l) + 1/(2β))²,
    h_θ = Σ_t log π_θ − log π_ref

so the chosen log-ratio is regressed onto +1/(2β) and the rejected onto
−1/(2β), each on its own (IPO regresses only their difference onto 1/β·½).
Here π_ref plays the role of the iterate π_t; refreshing the reference each
iteration is the outer loop of SPPO. The soft version (P̂ from a preference
model over K samples) is the self-play family's `sppo`.

Equivalents: TRL `DPOTrainer(loss_type="sppo_hard", beta=β)`. Verified
against TRL 1.16 `trl/trainer/dpo_trainer.py` (`sppo_hard` branch, parity
test) and the paper's eq. 4.7.
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
    """β = 1/η: the chosen / rejected log-ratios are regressed onto ±1/(2β)."""


def loss(stats, rollout, adv, cfg: Config, state):
    """Mean over decided pairs of (h_w − 1/(2β))² + (h_l + 1/(2β))²."""
    scores = ops.pair_scores(stats, rollout)
    target = 0.5 / cfg.beta
    per_pair = jnp.square(scores.chosen - target) + jnp.square(scores.rejected + target)
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta)


register(Algorithm(
    name="sppo_hard",
    family="preference",
    paper="Self-Play Preference Optimization for Language Model Alignment (Wu et al., 2024, arXiv:2405.00675)",
    Config=Config,
    advantages=ops.pair_sign_targets,
    loss=loss,
    needs=frozenset({"ref_logprobs"}),
    pairwise=True,
    prepare=pair_groups,
))
