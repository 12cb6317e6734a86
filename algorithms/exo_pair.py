"""EXO (pairwise): Efficient Exact Optimization of the reverse KL to the
preference-implied distribution, for K = 2.

Paper: Ji, Zhou, Li, Zhou, Liang, Xu, Yang, Wang, Sun, Li, Shum, Huang,
"Towards Efficient Exact Optimization of Language Model Alignment", ICML
2024, arXiv:2402.00856 (section 3.2, eq. 16 with K = 2).

Over the pair {y_w, y_l}, the policy's implicit distribution is
q_θ = softmax(β h_θ(y_w), β h_θ(y_l)) = (σ(βΔ), σ(−βΔ)) and the
preference label gives the target p = (1 − ε, ε). EXO minimises the
reverse KL

    L = KL(q_θ ‖ p) = σ(βΔ) [log σ(βΔ) − log(1 − ε)] + σ(−βΔ) [log σ(−βΔ) − log ε]

(DPO minimises the forward KL(p ‖ q_θ) instead, which is mode-covering).
L ≥ 0, with its unique minimum 0 at σ(βΔ) = 1 − ε, i.e. βΔ = log((1 − ε)/ε);
ε must lie in (0, 1) — the paper recommends 1e-3.

Equivalents: TRL `DPOTrainer(loss_type="exo_pair", label_smoothing=ε)`
(TRL's default label_smoothing = 0 makes its log ε = −∞ and the loss
infinite; set it). Verified against the paper's eq. 16 and TRL 1.16
`dpo_trainer.py` (`exo_pair` branch, parity test).
"""

from __future__ import annotations

import dataclasses
import math

import jax

from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.Pairing):
    beta: float = pieces.setting(0.1, gt=0.0)
    """β: inverse temperature of the implicit reward."""
    epsilon: float = pieces.setting(1e-3, gt=0.0, lt=1.0)
    """ε ∈ (0, 1): target probability of the rejected response (paper: 1e-3)."""


def loss(stats, rollout, adv, cfg: Config, state):
    """Mean over decided pairs of KL((σ(βΔ), σ(−βΔ)) ‖ (1 − ε, ε))."""
    scores = ops.pair_scores(stats, rollout)
    z = cfg.beta * scores.margin
    log_q_w, log_q_l = jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z)
    per_pair = jax.nn.sigmoid(z) * (log_q_w - math.log1p(-cfg.epsilon)) + jax.nn.sigmoid(-z) * (
        log_q_l - math.log(cfg.epsilon)
    )
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta)


register(Algorithm(
    name="exo_pair",
    family="preference",
    paper="Towards Efficient Exact Optimization of Language Model Alignment (Ji et al., 2024, arXiv:2402.00856)",
    Config=Config,
    advantages=ops.pair_sign_targets,
    loss=loss,
    needs=frozenset({"ref_logprobs"}),
    pairwise=True,
    prepare=pair_groups,
))
