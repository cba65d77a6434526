"""A `tokenizers` tokenizer built from GGUF tokenizer metadata (`tokenizer.ggml.*`).

Supported `tokenizer.ggml.model` values:
- "gemma4": Gemma 4 / DiffusionGemma, a SentencePiece-style BPE ("▁" for spaces, byte fallback);
  matches llama.cpp on its own Gemma 4 tokenizer test cases. As in SentencePiece and llama.cpp, a
  literal "▁" in the text is the space token, so it decodes as a space.
- "gpt2": byte-level BPE (GPT-2, Qwen2/Dream/RND1, LLaMA-3 style; the pre-tokenizer regex is chosen
  by `tokenizer.ggml.pre`), also what a BPE trained with `tokenizers` converts to.

Special tokens (GGUF token types CONTROL and USER_DEFINED) are deliberately kept out of the
`tokenizers` object, so that plain `encode` can never produce them: text a user typed, such as
"<|turn>", is always just text. Prompt builders insert special tokens as ids (`encode_parts`), and
only template text from the model file is searched for them (`split_specials`).

Building takes one to two seconds for Gemma 4 (262,144 tokens, 514,906 merges), about as long as
loading the same tokenizer from a saved 32 MB tokenizer.json, so nothing is cached
(`scripts/bench.py tokenizer`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
from gguf.constants import TokenType
from tokenizers import Regex, Tokenizer as _HFTokenizer, decoders, models, normalizers, pre_tokenizers

from dg_chat.errors import DgChatError
from dg_chat.text.sanitize import visible

# Pre-tokenizer regexes of byte-level BPE vocabularies, as their tokenizer.json files write them,
# by the `tokenizer.ggml.pre` names llama.cpp's converter gives them. GPT-2's is ByteLevel's own.
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN35 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
           r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT2_PRE = {None, "default", "gpt-2"}
_REGEX_PRE = {
    "llama-bpe": _LLAMA3, "llama3": _LLAMA3, "llama-v3": _LLAMA3,
    "qwen2": _QWEN2, "deepseek-r1-qwen": _QWEN2, "megrez": _QWEN2, "qwen35": _QWEN35,
}
# LLaMA-3 style vocabularies take a whole pre-token that is itself in the vocabulary as is.
_IGNORE_MERGES_PRE = {"llama-bpe", "llama3", "llama-v3"}

_ADDED_TYPES = [TokenType.CONTROL.value, TokenType.USER_DEFINED.value]
_HIDDEN_TYPES = [TokenType.CONTROL.value, TokenType.UNUSED.value]

class SpecialTokenText:
    """What dg-chat's tokenizers (`Tokenizer` below, the llama backend's `LlamaTokenizer`) offer the chat
    formats and the engine, and the prompt building they share: special tokens come only from trusted
    template text (`split_specials`) or as ids, never from `encode` of user text."""

    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    mask_id: int | None
    add_bos: bool
    """Whether prompts start with BOS (`tokenizer.ggml.add_bos_token`)."""
    model: str
    """`tokenizer.ggml.model` of the GGUF ("gemma4", "gpt2", "llama", ...)."""
    longest_token: int
    """The most characters of a token's text in the vocabulary, where a character stands for at least
    one character of the text it encodes ("▁" for a space; a byte-level character for a UTF-8 byte)."""

    def __init__(self, special_by_text: Mapping[str, int]):
        self._special_by_text = dict(special_by_text)
        # longest first, so that the leftmost match is also the longest (as `tokenizers` matches)
        alternatives = sorted(self._special_by_text, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        raise NotImplementedError

    def token_id(self, token: str) -> int:
        raise NotImplementedError

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        raise NotImplementedError

    def piece(self, token_id: int) -> str:
        raise NotImplementedError

    def split_specials(self, text: str) -> list[int | str]:
        """Trusted template text split into special-token ids and the plain text between them."""
        if self._special_re is None:
            return [text]
        parts: list[int | str] = []
        start = 0
        for match in self._special_re.finditer(text):
            parts += [text[start:match.start()], self._special_by_text[match.group()]]
            start = match.end()
        parts.append(text[start:])
        return [part for part in parts if part != ""]

    def fewest_tokens(self, text: str) -> int:
        """A lower bound on `len(encode(text))`, found without encoding: no token stands for more
        than `longest_token` characters. (Refusing a 50 MB paste must not take a minute.)"""
        return -(-len(text) // self.longest_token)

    def encode_parts(self, parts: Iterable[int | str]) -> list[int]:
        """Ids of a prompt given as special-token ids and texts. Adjacent texts are encoded together,
        so the ids equal those of tokenizing the whole prompt at once, yet no text becomes a special."""
        ids: list[int] = []
        run: list[str] = []
        for part in parts:
            if isinstance(part, str):
                run.append(part)
            else:
                ids += self.encode("".join(run))
                ids.append(part)
                run.clear()
        return ids + self.encode("".join(run))

    def special_id(self, token: str) -> int | None:
        """The id of a special (control or user-defined) token with this text, if there is one."""
        return self._special_by_text.get(token)


class Tokenizer(SpecialTokenText):
    """The tokenizer a GGUF describes in its metadata (`tokenizer.ggml.model` "gemma4" or "gpt2")."""

    def __init__(self, backend: _HFTokenizer, tokens: Sequence[str], token_types: np.ndarray,
                 *, model: str, special_ids: Mapping[str, int | None], add_bos: bool):
        self._backend = backend
        self.model = model
        self.vocab_size = len(tokens)
        self.longest_token = max(map(len, tokens))
        self.bos_id, self.eos_id = special_ids.get("bos"), special_ids.get("eos")
        self.pad_id, self.mask_id = special_ids.get("padding"), special_ids.get("mask")
        self.add_bos = add_bos
        self._added = {i: tokens[i] for i in np.flatnonzero(np.isin(token_types, _ADDED_TYPES)).tolist() if tokens[i]}
        self._hidden = frozenset(np.flatnonzero(np.isin(token_types, _HIDDEN_TYPES)).tolist())
        super().__init__({text: i for i, text in self._added.items()})

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> Tokenizer:
        model = metadata.get("tokenizer.ggml.model")
        if model not in ("gemma4", "gpt2"):
            raise DgChatError(f"unsupported tokenizer model {model!r} (dg-chat reads 'gemma4' and 'gpt2' tokenizers)")
        tokens = metadata.get("tokenizer.ggml.tokens")
        merges = metadata.get("tokenizer.ggml.merges")
        if tokens is None or merges is None or (isinstance(tokens, list) and not tokens):
            raise DgChatError(f"the {model} tokenizer in this GGUF lacks tokenizer.ggml.tokens or .merges")
        for key, value in (("tokens", tokens), ("merges", merges)):
            if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
                raise DgChatError(f"metadata 'tokenizer.ggml.{key}' is not an array of strings")
        types = metadata.get("tokenizer.ggml.token_type")
        if types is None:
            types = [TokenType.NORMAL.value] * len(tokens)
        if isinstance(types, list) and all(type(value) is int for value in types):  # as a writer passes them
            types = np.asarray(types, dtype=np.int64)
        if not (isinstance(types, np.ndarray) and types.ndim == 1 and types.dtype.kind in "iu"):
            raise DgChatError("metadata 'tokenizer.ggml.token_type' is not an array of integers")
        types = types.astype(np.int64)
        if len(types) != len(tokens):
            raise DgChatError(f"tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
        special_ids = {name: metadata.get(f"tokenizer.ggml.{name}_token_id")
                       for name in ("bos", "eos", "padding", "mask")}
        for name, token_id in special_ids.items():
            if token_id is not None and not 0 <= token_id < len(tokens):
                if name == "eos":  # the loader's checks warn of it: the model just never stops early
                    special_ids[name] = None
                    continue
                raise DgChatError(f"tokenizer.ggml.{name}_token_id {token_id} is outside the "
                                  f"{len(tokens)}-token vocabulary")
        pre = metadata.get("tokenizer.ggml.pre")
        if model == "gpt2" and pre not in _GPT2_PRE and pre not in _REGEX_PRE:
            raise DgChatError(f"unsupported pre-tokenizer {pre!r} of a gpt2 tokenizer")
        split = [merge.split(" ", 1) for merge in merges]
        if any(len(pair) != 2 for pair in split):
            raise DgChatError("tokenizer.ggml.merges has an entry that is not two tokens joined by a space")
        pairs = [(left, right) for left, right in split]
        try:
            backend = _pipeline(model, pre, {token: i for i, token in enumerate(tokens)}, pairs)
        except Exception as exc:  # noqa: BLE001 - `tokenizers` reports an inconsistent vocabulary as a plain Exception
            reason = " ".join(str(exc).split())
            raise DgChatError(f"the {model} tokenizer in this GGUF is inconsistent: {reason}") from None
        return cls(backend, tokens, types, model=model, special_ids=special_ids,
                   add_bos=bool(metadata.get("tokenizer.ggml.add_bos_token", False)))

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Plain text to ids. Never parses special tokens: '<|turn>' typed by a user stays text."""
        ids = self._backend.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if add_bos and self.bos_id is not None else ids

    def token_id(self, token: str) -> int:
        """The id of one vocabulary entry, e.g. token_id('<|turn>') == 105 for Gemma 4."""
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise DgChatError(f"the model's vocabulary has no token {token!r}")
        return token_id

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of `ids`; ids outside the vocabulary are dropped (model output is untrusted)."""
        texts: list[str] = []
        run: list[int] = []
        for token_id in map(int, ids):  # also numpy/torch scalars, which would miss the id sets
            if not 0 <= token_id < self.vocab_size or (skip_special and token_id in self._hidden):
                continue
            added = self._added.get(token_id)
            if added is None:
                run.append(token_id)
            else:  # added tokens are stored as plain text, not in the byte-level/"▁" encoding
                texts += [self._backend.decode(run, skip_special_tokens=False), added]
                run.clear()
        texts.append(self._backend.decode(run, skip_special_tokens=False))
        return "".join(texts)

    def piece(self, token_id: int) -> str:
        """Printable text of one token for the live canvas (no control characters)."""
        return self.pieces[token_id] if 0 <= token_id < self.vocab_size else "\ufffd"

    @cached_property
    def pieces(self) -> list[str]:
        """`piece(id)` of every id, built once (the canvas looks up hundreds of ids per step)."""
        texts = self._backend.decode_batch([[i] for i in range(self.vocab_size)], skip_special_tokens=False)
        for token_id, text in self._added.items():
            texts[token_id] = text
        return [visible(text) for text in texts]


def _pipeline(model: str, pre: str | None, vocab: dict[str, int], merges: list[tuple[str, str]]) -> _HFTokenizer:
    """The `tokenizers` pipeline of a GGUF tokenizer, without its special tokens."""
    if model == "gemma4":
        backend = _HFTokenizer(models.BPE(vocab, merges, byte_fallback=True, fuse_unk=True, unk_token="<unk>"))
        backend.normalizer = normalizers.Replace(" ", "▁")
        backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        return backend
    backend = _HFTokenizer(models.BPE(vocab, merges, ignore_merges=pre in _IGNORE_MERGES_PRE))
    if pre is None or pre in _GPT2_PRE:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_REGEX_PRE[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    return backend
