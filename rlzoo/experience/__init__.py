"""The experience layer: how one step's Rollout is made, one stage per file.

    prompts.py      which prompts (a deterministic stream per step) and how they are encoded
    filtering.py    dynamic sampling: more prompts until the batch is full of kept groups
    generation.py   K completions per prompt from the current policy (the KV-cache sampler)
    episodes.py     K multi-turn episodes per task against an environment (rlzoo.envs)
    scoring.py      task rewards -> rewards, reward_components, prompt_ids, answer_ids
    forwards.py     behaviour / reference forwards (only those the algorithm needs)
    segments.py     sentence segment ids for segment-level methods
    row_transforms.py, prepare.py
                    Rollout -> Rollout transforms (preference pairs, group filters) and
                    the ready-made `Algorithm.prepare` hooks built on them
    handoff.py      shuffled minibatches at group boundaries, sharded once per step

Each stage is a function with explicit inputs, testable without a trainer;
`rlzoo/train/loop.py` calls them in this order.
"""
