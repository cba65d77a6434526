"""The tokenizer of a llama.cpp model, run by libllama itself (exact for the model), with the
interface of dg_chat.text.tokenizer.Tokenizer.

`encode` never parses special tokens, so text a user typed ("<|im_end|>") stays text; chat
formats find special tokens only in trusted template text (SpecialTokenText.split_specials).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from functools import cached_property
from typing import Any, Protocol

from dg_chat.errors import DgChatError
from dg_chat.text.sanitize import visible
from dg_chat.text.tokenizer import SpecialTokenText

_CONTROL, _USER_DEFINED = 1 << 3, 1 << 4  # llama_token_attr bits


class LlamaVocabulary(Protocol):
    """What the tokenizer needs of a loaded model (a LlamaBackend): libllama and its vocabulary."""

    lib: Any
    """llama-cpp-python's ctypes module."""
    vocab_handle: Any
    """libllama's llama_vocab pointer, valid until the model is closed."""

    @property
    def closed(self) -> bool: ...


class LlamaTokenizer(SpecialTokenText):
    def __init__(self, vocabulary: LlamaVocabulary, model: str):
        self._vocabulary = vocabulary
        self._lib = vocabulary.lib
        vocab = self._vocab
        self.vocab_size: int = self._lib.llama_vocab_n_tokens(vocab)
        self.model = model
        """`tokenizer.ggml.model` of the GGUF ("gpt2", "llama", ...)."""

        def token(token_id: int) -> int | None:
            return token_id if 0 <= token_id < self.vocab_size else None

        self.bos_id = token(self._lib.llama_vocab_bos(vocab))
        self.eos_id = token(self._lib.llama_vocab_eos(vocab))
        self.pad_id = token(self._lib.llama_vocab_pad(vocab))
        self.mask_id = token(self._lib.llama_vocab_mask(vocab))
        self.add_bos: bool = bool(self._lib.llama_vocab_get_add_bos(vocab)) and self.bos_id is not None
        """Whether prompts start with BOS (`tokenizer.ggml.add_bos_token`)."""
        self._pieces: dict[int, str] = {}
        self.longest_token = max(map(len, self._ids_by_text))
        super().__init__({text: i for text, i in self._ids_by_text.items()
                          if self._lib.llama_vocab_get_attr(vocab, i) & (_CONTROL | _USER_DEFINED)})

    @property
    def _vocab(self) -> Any:
        if self._vocabulary.closed:
            raise DgChatError("the model is closed")
        return self._vocabulary.vocab_handle

    def _tokenize(self, text: str) -> list[int]:
        data = text.encode("utf-8", errors="replace")  # a lone surrogate must not crash a turn
        capacity = len(data) + 8
        for _ in range(2):
            out = (ctypes.c_int32 * capacity)()
            # add_special and parse_special off: never parse specials
            n = self._lib.llama_tokenize(self._vocab, data, len(data), out, capacity, False, False)
            if n >= 0:
                return out[:n]
            capacity = -n
        raise DgChatError("llama.cpp could not tokenize the text")

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Plain text to ids. Never parses special tokens: '<|im_end|>' typed by a user stays text."""
        ids = self._tokenize(text)
        return [self.bos_id, *ids] if add_bos and self.bos_id is not None else ids

    @cached_property
    def _ids_by_text(self) -> dict[str, int]:
        vocab = self._vocab
        return {self._lib.llama_vocab_get_text(vocab, i).decode("utf-8", errors="replace"): i
                for i in range(self.vocab_size)}

    def token_id(self, token: str) -> int:
        """The id of one vocabulary entry, e.g. token_id('<|im_end|>')."""
        try:
            return self._ids_by_text[token]
        except KeyError:
            raise DgChatError(f"the model's vocabulary has no token {token!r}") from None

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of `ids`; ids outside the vocabulary are dropped (model output is untrusted)."""
        kept = [i for i in ids if 0 <= i < self.vocab_size]
        tokens = (ctypes.c_int32 * len(kept))(*kept)
        capacity = 8 * len(kept) + 16
        for _ in range(2):
            out = ctypes.create_string_buffer(capacity)
            n = self._lib.llama_detokenize(self._vocab, tokens, len(kept), out, capacity, False, not skip_special)
            if n >= 0:
                return out.raw[:n].decode("utf-8", errors="replace")
            capacity = -n
        raise DgChatError("llama.cpp could not detokenize the ids")

    def piece(self, token_id: int) -> str:
        """Printable text of one token for the live canvas (no control characters)."""
        if not 0 <= token_id < self.vocab_size:
            return "\ufffd"
        text = self._pieces.get(token_id)
        if text is None:
            n = capacity = 64
            for _ in range(2):
                out = ctypes.create_string_buffer(capacity)
                n = self._lib.llama_token_to_piece(self._vocab, token_id, out, capacity, 0, True)
                if n >= 0:
                    break
                capacity = -n
            text = out.raw[:max(n, 0)].decode("utf-8", errors="replace")
            text = visible(text)
            self._pieces[token_id] = text
        return text
