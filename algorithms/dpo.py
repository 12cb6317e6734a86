"""DPO: Direct Preference Optimization.

Paper: Rafailov et al., "Direct Preference Optimization: Your Language
Model is Secretly a Reward Model", NeurIPS 2023, arXiv:2305.18290 (eq. 7).
Label smoothing (conservative DPO) from Mitchell, "A note on DPO with
noisy preferences", 2023, https://ericmitchell.ai/cdpo.pdf.

Pairs are groups of two rows (group_size = 2); the chosen response y_w is
the row with the higher reward, the rejected y_l the other. With the
sequence log-ratio against the frozen reference

    h_θ(y) = Σ_t log π_θ(y_t | y_<t) − log π_ref(y_t | y_<t)      (trained tokens)
    Δ      = h_θ(y_w) − h_θ(y_l)                                   (the margin)

the loss over pairs is

    L = −(1 − ε) log σ(β Δ) − ε log σ(−β Δ)

(ε = 0: the paper). β h_θ(y) is the implicit reward. At π_θ = π_ref, Δ = 0,
L = log 2 and ∇L = −(β/2)(∇ log π_θ(y_w) − ∇ log π_θ(y_l)). Tied pairs
carry no preference and add nothing. Paper default: β = 0.1.

Equivalents: TRL `DPOTrainer(loss_type="sigmoid", beta=0.1)` (TRL 1.16's
sigmoid loss no longer applies `label_smoothing`; older TRL did, as here).
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
    label_smoothing: float = pieces.setting(0.0, ge=0.0, le=1.0)
    """ε: assumed probability that a preference label is flipped (conservative DPO)."""


def advantages(rollout, cfg: Config, state):
    """The preference sign of each row (+1 chosen, −1 rejected, 0 tie) on its tokens.

    DPO has no advantage; the sign is what its loss pushes along, and is
    what the trainer logs as the advantage."""
    sign, _ = ops.pair_preference(rollout)
    return ops.broadcast_to_tokens(sign, rollout), state


def loss(stats, rollout, adv, cfg: Config, state):
    """Mean over decided pairs of −(1 − ε) log σ(βΔ) − ε log σ(−βΔ)."""
    scores = ops.pair_scores(stats, rollout)
    per_pair = ops.logistic_pair_loss(cfg.beta * (scores.chosen - scores.rejected), 1.0 - cfg.label_smoothing, cfg.label_smoothing)
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta)


register(Algorithm(
    name="dpo",
    family="preference",
    paper="Direct Preference Optimization: Your Language Model is Secretly a Reward Model (Rafailov et al., 2023, arXiv:2305.18290)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    needs=frozenset({"ref_logprobs"}),
    pairwise=True,
    prepare=pair_groups,
))
