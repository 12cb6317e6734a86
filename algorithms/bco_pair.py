"""BCO (pairwise): Binary Classifier Optimization on preference pairs.

Paper: Jung, Han, Jang, Kim, Lee, Son, "Binary Classifier Optimization for
Large Language Model Alignment", 2024, arXiv:2404.04656 (section 3, the BCE
loss on implicit rewards with the reward shift δ).

The implicit reward r = β h_θ(y), h_θ = Σ_t log π_θ − log π_ref, is the
logit of a binary classifier that labels chosen responses 1 and rejected
ones 0:

    L = −log σ(r_w − δ) − log σ(−(r_l − δ))

Minimising this BCE also minimises an upper bound of the DPO loss. The
paper's reward shift δ is the running mean of the implicit rewards (TRL up
to 0.11 kept it in `RunningMoments`: after each batch, δ ← average over
steps of the batch's mean reward, then the loss used the updated δ). TRL
1.16's `bco_pair` dropped the shift (δ = 0); that is the default here
(`running_shift=False`) for parity. With `running_shift=True` the state
carries (δ, step count) and `advantages` folds in the batch's mean reward
β·h under the policy that sampled the batch (`behaviour_logprobs`, the
current policy at the step's first gradient evaluation), once per
minibatch, so gradient accumulation stays exact.

Equivalents: TRL `DPOTrainer(loss_type="bco_pair")` (δ = 0); TRL ≤ 0.11
`bco_pair` (running δ). Verified against TRL 1.16
`trl/trainer/dpo_trainer.py` (`bco_pair` branch, parity test) and the TRL
≤ 0.11 `RunningMoments` usage (copied in
YSLIU627/Regularized-Preference-Optimization `rpo_trainer.py`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.Pairing):
    beta: float = pieces.setting(0.1, gt=0.0)
    """β: inverse temperature of the implicit reward (TRL default 0.1)."""
    running_shift: bool = False
    """Shift rewards by the running mean reward δ (the paper, TRL ≤ 0.11); TRL 1.16 uses δ = 0."""


def init_state(cfg: Config):
    """δ = 0 before any batch; `count` = batches folded in."""
    return {"shift": jnp.zeros((), jnp.float32), "count": jnp.zeros((), jnp.float32)}


def advantages(rollout, cfg: Config, state):
    """The preference sign on each row's tokens; with `running_shift`, folds
    the batch's mean implicit reward (behaviour policy) into δ."""
    adv = ops.pair_sign_advantage(rollout)
    if not cfg.running_shift:
        return adv, state
    _, weight = ops.pair_preference(rollout)
    reward = jax.lax.stop_gradient(cfg.beta * ops.sequence_scores(rollout.behaviour_logprobs, rollout))
    pair_mean = jnp.sum(ops.group_view(reward, 2), axis=1) / 2.0
    decided = jnp.sum(weight)
    batch_mean = jnp.sum(weight * pair_mean) / jnp.maximum(decided, 1.0)
    count = state["count"] + (decided > 0)
    updated = state["shift"] + (batch_mean - state["shift"]) / jnp.maximum(count, 1.0)
    shift = jnp.where(decided > 0, updated, state["shift"])
    return adv, {"shift": shift, "count": count}


def loss(stats, rollout, adv, cfg: Config, state):
    """Mean over decided pairs of −log σ(r_w − δ) − log σ(δ − r_l)."""
    scores = ops.pair_scores(stats, rollout)
    shift = state["shift"] if cfg.running_shift else 0.0
    r_w, r_l = cfg.beta * scores.chosen - shift, cfg.beta * scores.rejected - shift
    per_pair = -jax.nn.log_sigmoid(r_w) - jax.nn.log_sigmoid(-r_l)
    extra = {"reward_shift": jnp.asarray(shift, jnp.float32)}
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta, extra)


register(Algorithm(
    name="bco_pair",
    family="preference",
    paper="Binary Classifier Optimization for Large Language Model Alignment (Jung et al., 2024, arXiv:2404.04656)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    init_state=init_state,
    needs=frozenset({"ref_logprobs"}),
    pairwise=True,
    prepare=pair_groups,
))
