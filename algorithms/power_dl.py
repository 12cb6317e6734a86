"""POWER-DL: Preference Optimization via Weighted Entropy Robust Rewards with
Dynamic Labels.

Paper: Rashidinejad, Tian, "Sail into the Headwind: Alignment via Robust
Rewards and Dynamic Labels against Reward Hacking", ICLR 2025,
arXiv:2412.09544 (sections 4–5).

POWER (against type-I reward hacking: poorly covered, subpar responses that
look good) maximises a reward that is robust to the data's statistical error
under Guiaşu's weighted entropy instead of a KL to a reference. With weights
1/|y| the implicit reward is the length-normalised log-likelihood (no
reference model) and the adversarial reward turns into an imitation term on
the chosen responses:

    s(y) = (1/|y|) Σ_t log π_θ(y_t | y_<t),     z = β (s(y_w) − s(y_l))
    L_POWER = −log σ(z) − η β s(y_w)

Dynamic labels (against type-II hacking: decent responses that look bad)
replace each pair's hard label 1 by a soft label l ∈ [0, 1] that moves
toward the model's own "stationary" preference,

    l ← (1 − γ) l + γ σ(z)          (one step per time the pair is seen)
    L  = −[l log σ(z) + (1 − l) log σ(−z)] − η β s(y_w)

whose gradient in z is σ(z) − l: it shrinks on pairs whose label the model
keeps contradicting. γ = 0 keeps l = 1 (POWER); γ = 0 and η = 0 is SimPO
with margin 0. l stays in [0, 1] (a convex combination).

Implementation: the labels live in the state, a table indexed by
`prompt_ids` (one pair per prompt id, as `rlzoo.preference_data` assigns; ids
are taken modulo `num_labels`). `advantages` reads the batch's labels l_t
into the targets for the loss (`row_targets`: l on both rows of the pair;
the logged advantage is sign · l on each row's tokens), and writes l_{t+1}
from σ(z) under `behaviour_logprobs` (the policy at the start of the step) —
once per minibatch, so accumulation stays exact.

Verified against: only the paper's abstract (arXiv:2412.09544 and
sciencestack.ai's TL;DR) and the summary at https://papers.lunadong.com/paper/15795,
which agree with the design above in words: POWER combines Guiaşu's weighted
entropy with robust reward maximisation to emphasise well-covered responses
(against type-I hacking); dynamic labels move the
preference labels toward "stationary labels", shrinking the gradients of
pairs the model keeps contradicting (against type-II hacking).
[inferred] The exact POWER objective (the weighted-entropy weights, any
length-dependent offset and the form of the robust term), the label-update
rule and all defaults (β = 2, η = 1, γ = 0.1). The method sections (4–5),
the hyperparameter table and any code were searched for (arXiv HTML and
ar5iv, of which only the opening was reachable, paper summaries, and
GitHub code and file search for a POWER-DL implementation or notes) and not
found. Treat this file as a faithful-in-spirit implementation to be checked
against the paper before reporting results.
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
    beta: float = pieces.setting(2.0, gt=0.0)
    """β: scale of the length-normalised reward [inferred default]."""
    eta: float = pieces.setting(1.0, ge=0.0)
    """η: weight of the robust-reward (imitation) term η β s(y_w) [inferred default]."""
    label_step: float = pieces.setting(0.1, ge=0.0, le=1.0)
    """γ ∈ [0, 1]: step of the dynamic-label update (0: fixed hard labels) [inferred default]."""
    num_labels: int = pieces.setting(65536, ge=1)
    """Size of the soft-label table (pairs are indexed by prompt_ids modulo this)."""


def init_state(cfg: Config):
    """Every pair starts with its hard label l = 1 (chosen preferred)."""
    return {"labels": jnp.ones((cfg.num_labels,), jnp.float32)}


def _pair_ids(rollout, cfg: Config):
    return jnp.max(ops.group_view(rollout.prompt_ids, 2), axis=1) % cfg.num_labels


def advantages(rollout, cfg: Config, state):
    """Targets {"advantages": sign · l_t on each row's tokens (what the trainer
    logs), "row_targets": [B] the pair's label l_t on both its rows (0 for a tie
    or a pair with no trained token)}; the state gets
    l_{t+1} = (1 − γ) l_t + γ σ(z_behaviour)."""
    sign, weight = ops.pair_preference(rollout)
    ids = _pair_ids(rollout, cfg)
    labels = state["labels"][ids]
    score = ops.sequence_scores(rollout.behaviour_logprobs, rollout, reference=False, length_normalise=True)
    chosen, rejected = ops.split_pairs(jax.lax.stop_gradient(score), sign)
    target = jax.nn.sigmoid(cfg.beta * (chosen - rejected))
    updated = jnp.where(weight > 0, (1.0 - cfg.label_step) * labels + cfg.label_step * target, labels)
    table = state["labels"].at[ids].set(updated)
    trained = jnp.any(ops.group_view(jnp.any(rollout.loss_mask, axis=1), 2), axis=1)
    decided = ops.group_view(sign, 2)[:, 0] != 0
    targets = {"advantages": ops.pair_advantage(labels, sign, rollout),
               "row_targets": jnp.repeat(jnp.where(decided & trained, labels, 0.0), 2)}
    return targets, {"labels": table}


def loss(stats, rollout, targets, cfg: Config, state):
    """Mean over decided pairs of the soft-label logistic loss minus η β s(y_w)."""
    scores = ops.pair_scores(stats, rollout, reference=False, length_normalise=True)
    label = ops.group_view(targets["row_targets"], 2)[:, 0]
    preference = ops.logistic_pair_loss(cfg.beta * scores.margin, label, 1.0 - label)
    per_pair = preference - cfg.eta * cfg.beta * scores.chosen
    decided = jnp.maximum(jnp.sum(scores.weight), 1.0)
    extra = {"label_mean": jnp.sum(scores.weight * label) / decided}
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta, extra)


register(Algorithm(
    name="power_dl",
    family="preference",
    paper="Sail into the Headwind: Alignment via Robust Rewards and Dynamic Labels against Reward Hacking (Rashidinejad & Tian, 2024, arXiv:2412.09544)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    plain_advantage=False,
    init_state=init_state,
    needs=frozenset({"prompt_ids"}),
    pairwise=True,
    prepare=pair_groups,
))
