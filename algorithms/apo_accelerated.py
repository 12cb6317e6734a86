"""APO (accelerated): Accelerated Preference Optimization with a Nesterov-
extrapolated reference.

Paper: He, Yuan, Gu, "Accelerated Preference Optimization for Large Language
Model Alignment", 2024, arXiv:2410.06293 (section 3, Algorithm 1).
Registry name `apo_accelerated` (not Anchored PO, `apo_zero` / `apo_down`,
nor Asymmetric PO).

Iterative preference optimisation (iterative DPO, SPPO) is a proximal-point
method: iteration t minimises a pairwise loss against the reference π_t.
APO adds Nesterov momentum to the sequence of iterates. After the update
π̂_{t+1} = argmin_π L(π; π_t), the next reference is the extrapolation

    π_{t+1}(y|x) ∝ π̂_{t+1}(y|x) · (π̂_{t+1}(y|x) / π̂_t(y|x))^α
    log π_{t+1} = (1 + α) log π̂_{t+1} − α log π̂_t − log Z(x)

and iteration t + 1 trains with the DPO loss against it:

    L = −log σ(β [ (log π_θ(y_w) − log π_{t+1}(y_w)) − (log π_θ(y_l) − log π_{t+1}(y_l)) ])

The normaliser log Z(x) is the same for both responses of a pair and cancels
in the margin, so the reference margin is (1 + α) m(π̂_{t+1}) − α m(π̂_t),
m = log-likelihood margin: this is all the loss needs. α = 0 is iterative DPO.

How the extrapolation reaches the loss: it is an outer-loop reference
refresh, declared through the registry's `reference_logprobs` hook
(`extrapolated_logprobs` below). The trainer keeps the two newest frozen
iterates; every `--ref-refresh-every N` steps (one APO iteration) the latest
becomes the previous and the trained policy the latest, and `ref_logprobs`
is filled token by token with (1 + α) log π̂_{t+1} − α log π̂_t. Until the
first refresh both iterates are the initial policy, so the reference is
π_ref; with a frozen reference (N = 0) APO is plain DPO. Offline
(`rlzoo.preference_data`, whose `ref_logprob_fn` is called once per batch),
pass `lambda tokens: extrapolated_logprobs(latest(tokens), previous(tokens), α)`.
The loss is then DPO's against that reference.

α: the paper's experiments use α ∈ {0.1, …, 0.6} [inferred default 0.3;
not verified against official code, none published]. The extrapolation
formula is the paper's Algorithm 1 (line "Nesterov's extrapolation").
"""

from __future__ import annotations

import dataclasses
from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.Pairing):
    beta: float = pieces.setting(0.1, gt=0.0)
    """β: inverse temperature of the implicit reward."""
    alpha: float = pieces.setting(0.3, ge=0.0)
    """α ≥ 0: Nesterov momentum of the reference extrapolation (0: iterative DPO)."""


def extrapolated_logprobs(latest, previous, alpha: float):
    """[B, T]: (1 + α) log π̂_{t+1} − α log π̂_t per token (unnormalised log π_{t+1})."""
    return (1.0 + alpha) * latest - alpha * previous


def loss(stats, rollout, adv, cfg: Config, state):
    """Mean over decided pairs of −log σ(βΔ), Δ against the extrapolated reference in `ref_logprobs`."""
    scores = ops.pair_scores(stats, rollout)
    per_pair = ops.logistic_pair_loss(cfg.beta * scores.margin)
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta)


register(Algorithm(
    name="apo_accelerated",
    family="preference",
    paper="Accelerated Preference Optimization for Large Language Model Alignment (He et al., 2024, arXiv:2410.06293)",
    Config=Config,
    advantages=ops.pair_sign_targets,
    loss=loss,
    needs=frozenset({"ref_logprobs"}),
    reference_logprobs=lambda latest, previous, cfg: extrapolated_logprobs(latest, previous, cfg.alpha),
    pairwise=True,
    prepare=pair_groups,
))
