"""CoPG: Contrastive Policy Gradient.

Paper: Flet-Berliac, Grinsztajn, Strub, Wu, Choi, Cremer, Ahmadian,
Chandak, Azar, Pietquin and Geist, "Contrastive Policy Gradient: Aligning
LLMs on sequence-level scores in a supervised-friendly fashion", 2024,
arXiv:2406.19185.

Optimises an arbitrary sequence-level reward R under a KL penalty to π_ref,
J(π) = E_{y~π}[R(y)] − β KL(π ‖ π_ref), from pairs of responses to the same
prompt drawn from any distribution (off-policy, no importance weights). With
the regularised reward R^π_β(y) = R(y) − β (log π(y) − log π_ref(y))
(sequence sums over trained tokens), the CoPG update for a pair (y, y') is

    ĝ = ½ (R^π_β(y) − R^π_β(y')) (∇log π(y) − ∇log π(y')),

the policy gradient of J with the partner as the baseline (the "right state
baseline"): its fixed point is exactly the regularised optimum π* ∝ π_ref
exp(R/β), whatever the sampling distribution. The paper minimises the squared
difference of the regularised rewards (β > 0):

    ℓ(y, y') = (R^π_β(y) − R^π_β(y'))² = (ΔR − β Δh)²,
    ΔR = R(y) − R(y'),   Δh = h(y) − h(y'),   h(y) = log π_θ(y) − log π_ref(y),

whose negative gradient is 2β (ΔR − β Δh)(∇log π(y) − ∇log π(y')) = 4β ĝ.

Properties: zero loss and zero gradient iff β Δh = ΔR; adding a
prompt-dependent constant to both rewards changes nothing (only ΔR enters);
symmetric in (y, y'). Special cases the paper names: with preference
rewards whose gap R(y_w) − R(y_l) is ½ the loss is β² times IPO's
(Δh − 1/(2β))² (IPO's τ = β); at π_θ = π_ref the gradient is
−2β ΔR (∇log π(y) − ∇log π(y')), i.e. 4β times REINFORCE with the partner
as baseline (RLOO's gradient for K = 2). At β = 0 the loss is constant, so
β must be positive. The paper's loss is pairwise; with K > 2 rows per group
this file averages it over every pair of the group (Cohere's Command A
report sums the pairs and divides by K − 1 instead, i.e. K/2 times this).

Closest relatives: IPO (fixed margin instead of reward difference), REBEL
(the same regression anchored at π_t rather than π_ref).

Equivalents: none in TRL or verl.

Verified against: the loss's form, the squared difference of the regularised
rewards R^π_β(y) − R^π_β(y') with no prefactor, from the literature review of
the paper at https://www.themoonlight.io/review/contrastive-policy-gradient-aligning-llms-on-sequence-level-scores-in-a-supervised-friendly-fashion
("CoPG minimizes a sample loss that contrasts the rewards of pairs of
independent generations", ℓ_CoPG(y, y'; π) = (R^π_β(y) − R^π_β(y'))…), and
from a digest of Cohere's Command A report (arXiv:2504.00698, p. 7) in a
public GitHub paper-notes file, which writes the online CoPG loss as
1/(K − 1) Σ_{i>j} (R^π_β(y_i) − R^π_β(y_j))² with no importance sampling,
clipping or value network. So the loss carries no 1/(4β) factor: its
gradient is the CoPG update ĝ scaled by 4β. The IPO and
policy-gradient special cases and the off-policy fixed point follow the
abstract and sciencestack.ai's summary (https://www.sciencestack.ai/paper/2406.19185:
the KL-regularised optimum is the exponential tilt of π_ref by R/β).
[inferred] The default β = 0.1: the paper's hyperparameters were not
reachable (arXiv HTML, ar5iv, summaries and GitHub searched; only abstracts
and the loss's form came back).
"""

from __future__ import annotations

import dataclasses

import jax

from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.Pairing):
    beta: float = pieces.setting(0.1, gt=0.0)
    """β > 0: KL-to-reference coefficient of the regularised objective [inferred default]."""


def loss(stats, rollout, targets, cfg: Config, state):
    """Mean over pairs of (ΔR − βΔh)² = (R^π_β(y) − R^π_β(y'))²."""
    stats, rollout, _ = ops.loss_inputs(stats, rollout)
    log_ratio = ops.sequence_sum(stats.logprobs - rollout.ref_logprobs, rollout.loss_mask)
    rewards = targets["row_targets"]
    total = ops.group_pair_regression(cfg.beta * log_ratio, rewards, rollout)
    kl = ops.kl_estimate(jax.lax.stop_gradient(stats.logprobs), rollout.ref_logprobs)
    metrics = {
        "pg_loss": total,
        "seq_log_ratio_ref": ops.masked_mean(jax.lax.stop_gradient(log_ratio), rollout.sample_weight),
        "kl": ops.masked_mean(kl, ops.weighted_mask(rollout)),
    }
    return total, metrics


register(Algorithm(
    name="copg",
    family="self-play",
    paper="Contrastive Policy Gradient: Aligning LLMs on sequence-level scores in a supervised-friendly fashion (Flet-Berliac et al., 2024, arXiv:2406.19185)",
    Config=Config,
    advantages=ops.centred_reward_targets,
    loss=loss,
    plain_advantage=False,
    needs=frozenset({"ref_logprobs"}),
    pairwise=True,
    prepare=pair_groups,
))
