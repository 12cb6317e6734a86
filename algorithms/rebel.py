"""REBEL: REinforcement learning via Regressing Relative Rewards.

Paper: Gao, Chang, Zhan, Oertell, Swamy, Brantley, Joachims, Bagnell, Lee
and Sun, "REBEL: Reinforcement Learning via Regressing Relative Rewards",
NeurIPS 2024, arXiv:2404.16767.

Each iteration samples two responses y, y' per prompt x from the current
iterate π_t and regresses the difference of their log-ratios onto the
difference of their rewards:

    s_θ(y)   = Σ_t log π_θ(y_t | x, y_<t) − log π_t(y_t | x, y_<t)      (trained tokens)
    r'(y)    = r(x, y) − β_KL Σ_t (log π_t(y_t) − log π_ref(y_t))       (KL-penalised reward, β_KL = kl_coef)
    ℓ(y, y') = ((s_θ(y) − s_θ(y')) − η (r'(y) − r'(y')))²

averaged over pairs. π_t is the policy that generated the pair, so its
log-probs are `Rollout.behaviour_logprobs`. The minimiser puts the
log-ratio differences at η times the reward differences (the mirror-descent
step π_{t+1} ∝ π_t exp(η r)); the unknown normaliser of that step cancels
in the difference, which is why the loss is pairwise. Adding any prompt-
dependent constant to both rewards changes nothing. The paper writes the
loss as ((1/η)Δs − Δr')², which is this one divided by η²: same minimiser,
gradient scaled by 1/η²; the official code (and this file) use the form
above. With a group of K > 2 rows every pair of the group is regressed
(the mean over the K(K − 1)/2 pairs); K = 2 is the paper's setting.

At π_θ = π_t (Δs = 0) the gradient is −(2η/P) Δr' (∇log π(y) − ∇log π(y')),
i.e. REINFORCE with the partner as baseline (RLOO with K = 2), scaled by 4η.
Closest relatives: REFUEL (its multi-turn extension), IPO (squared loss on
a fixed preference margin instead of a reward difference), CoPG.

Equivalents: none in TRL or verl. Verified against the official code,
github.com/ZhaolinGao/REBEL src/tldr/rebel.py (loss
`((new_logprobs − logprobs)[:n] − (…)[n:] − eta·(r[:n] − r[n:]))²`,
sequence-summed log-probs, KL-penalised rewards (k1), eta = 1.0,
kl_coef = 0.05).
"""

from __future__ import annotations

import dataclasses


from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.KLPenalty, pieces.Pairing):
    kl_in_loss = False  # the KL penalty is folded into the reward
    eta: float = pieces.setting(1.0, gt=0.0)
    """η: target log-ratio difference per unit of reward difference (official code default)."""
    kl_coef: float = pieces.setting(0.05, ge=0.0)
    """β_KL: KL-to-reference penalty folded into the sequence reward, not into
    the loss (official code default 0.05; 0 drops the reference)."""
    kl_estimator: ops.KLEstimator = "k1"
    """Estimator of the per-token reward KL at π_t (k1 = log π_t − log π_ref, the official code's)."""


def advantages(rollout, cfg: Config, state):
    """{"advantages": r' = r − β_KL Σ_t (log π_t − log π_ref) centred within the
    group, on each row's tokens, "row_targets": [B] the same per row (0 for a
    row with no trained token)}.

    Centring keeps every pairwise difference r'_i − r'_j, which is all the
    loss reads; for K = 2 the rows get ±(r'_1 − r'_2)/2."""
    rewards = rollout.rewards + ops.kl_reward_penalty(rollout, cfg.kl_coef, cfg.kl_estimator).sum(axis=1)
    centred = ops.broadcast_to_tokens(ops.group_centre(rewards, rollout.group_size), rollout)
    return {"advantages": centred, "row_targets": ops.row_values(centred, rollout)}, state


def loss(stats, rollout, targets, cfg: Config, state):
    """Mean over pairs of ((s_θ(y_i) − s_θ(y_j)) − η (A_i − A_j))², A = `row_targets`."""
    return ops.behaviour_log_ratio_regression(stats, rollout, cfg.eta * targets["row_targets"])


register(Algorithm(
    name="rebel",
    family="self-play",
    paper="REBEL: Reinforcement Learning via Regressing Relative Rewards (Gao et al., 2024, arXiv:2404.16767)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    plain_advantage=False,
    pairwise=True,
    prepare=pair_groups,
))
