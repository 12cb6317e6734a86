"""Stage 2, generation: K completions per prompt from the current policy
with the jitted KV-cache sampler (single turn)."""

from __future__ import annotations

import dataclasses

import jax

from rlzoo.experience.prompts import encode_prompt
from rlzoo.rollout import Rollout
from rlzoo.sampling import Sampler, response_tokens
from rlzoo.tasks import Example


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop_at_eos: bool = True
    """False: every completion runs to max_new_tokens (fixed-length benchmarks)."""


def generate(sampler: Sampler, model, tokenizer, chat: bool, examples: list[Example], num_samples: int,
             rng: jax.Array, settings: SamplingSettings, greedy: bool = False) -> tuple[Rollout, list[str]]:
    """(rollout of len(examples) · num_samples rows in groups of num_samples,
    the decoded completions)."""
    prompts = [encode_prompt(tokenizer, ex.prompt, chat) for ex in examples]
    stop = getattr(tokenizer, "stop_ids", (tokenizer.eos_id,)) if settings.stop_at_eos else ()
    rollout = sampler(
        model, prompts, num_samples=num_samples, max_new_tokens=settings.max_new_tokens, rng=rng,
        temperature=0.0 if greedy else settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
        eos_id=list(stop), pad_id=tokenizer.pad_id,
    )
    completions = [tokenizer.decode(ids) for ids in response_tokens(rollout)]
    return rollout, completions
