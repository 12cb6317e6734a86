"""SPPO: Self-Play Preference Optimization.

Paper: Wu, Sun, Yuan, Ji, Yang and Gu, "Self-Play Preference Optimization
for Language Model Alignment", ICLR 2025, arXiv:2405.00675 (Algorithm 1).

Alignment as a two-player constant-sum game whose solution is the Nash
(von Neumann winner) policy, approximated by multiplicative weights:
π_{t+1}(y|x) ∝ π_t(y|x) exp(η P(y ≻ π_t | x)). For each prompt, K responses
are sampled from π_t and each one's win rate against π_t is estimated from
the group,

    P̂(y_i ≻ π_t | x) = 1/K Σ_j P(y_i ≻ y_j | x)          (j = i included, P = ½)

and every response's log-ratio is regressed onto its centred win rate:

    s_θ(y_i) = Σ_t log π_θ(y_i,t | x, y_i,<t) − log π_t(y_i,t | x, y_i,<t)
    L(θ)     = 1/N Σ_i (s_θ(y_i) − η (P̂(y_i ≻ π_t | x) − ½))²

π_t is the policy that sampled the group, so its log-probs are
`Rollout.behaviour_logprobs` (in the official pipeline the reference model
of iteration t is the iterate π_t). The preference P(y_i ≻ y_j) comes from
the rewards: Bradley–Terry σ(r_i − r_j), as the official pipeline does with
PairRM scores; `hard` 1/½/0 by comparison; or `given`: the rewards already
are the win rates P̂ (a general, possibly intransitive, preference model
run by the trainer). With symmetric preferences the targets sum to zero over
a group.

Unlike DPO/IPO this is not a function of the pair margin: each response's
likelihood moves on its own (the winner's rises and the loser's falls in
absolute terms, targets η(P̂ − ½)). At π_θ = π_t the gradient is REINFORCE
with advantage P̂ − ½, scaled by 2η.

The official code trains on two rows per prompt (the best and the worst of
K = 5 by reward, with the K-sample win rates); Algorithm 1 of the paper, and
this file, regress every row of the group. With `win_rate="given"` and
rewards in {1, 0} the loss is half TRL's `sppo_hard` (TRL sums the two
rows' terms, this file averages rows); the zoo's `sppo_hard` (preference
family) is that TRL variant, with π_ref in the role of π_t.

Equivalents: TRL `DPOTrainer(loss_type="sppo_hard", beta=1/η)` (hard
probabilities only); verl recipe/sppo. Verified against the official code,
github.com/uclaml/SPPO: scripts/compute_prob.py (P_ij = 1/(1 + exp(s_j −
s_i)), win rate = row mean over all K including i) and sppo/trainer.py
(loss_type "sppo": (logits_w − (1/β)(P̂_w − ½))² + same for the loser, /2,
sequence-summed log-probs, reference = π_t); β = 0.001 (η = 1000) from
scripts/pipeline.sh.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.ConfigBase):
    eta: float = pieces.setting(1000.0, gt=0.0)
    """η: step size of the multiplicative-weights update (1/β; official β = 0.001)."""
    win_rate: Literal["bradley-terry", "hard", "given"] = "bradley-terry"
    """How P̂ is obtained: group average of σ(r_i − r_j) (official), of the hard 1/½/0
    comparison, or `given` (the rewards are the win rates)."""


def advantages(rollout, cfg: Config, state):
    """{"advantages": P̂(y_i ≻ π_t) − ½ on the tokens of row i, "row_targets":
    [B] the same per row (0 for a row with no trained token)}."""
    if cfg.win_rate == "given":
        rate = rollout.rewards
    else:
        rate = ops.group_win_rates(rollout.rewards, rollout.sample_weight, rollout.group_size, cfg.win_rate)
    excess = ops.broadcast_to_tokens(rate - 0.5, rollout)
    return {"advantages": excess, "row_targets": ops.row_values(excess, rollout)}, state


def loss(stats, rollout, targets, cfg: Config, state):
    """1/N Σ_i (s_θ(y_i) − η A_i)², A = `row_targets`."""
    log_ratio, metrics = ops.behaviour_sequence_log_ratio(stats, rollout)
    total = ops.aggregate_rows(jnp.square(log_ratio - cfg.eta * targets["row_targets"]), rollout)
    return total, metrics | {"pg_loss": total}


register(Algorithm(
    name="sppo",
    family="self-play",
    paper="Self-Play Preference Optimization for Language Model Alignment (Wu et al., 2024, arXiv:2405.00675)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    plain_advantage=False,
))
