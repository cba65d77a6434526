"""GGUF tokenizer metadata (`tokenizer.ggml.*`) for a byte-level BPE trained with `tokenizers`.

The writer's side of `Tokenizer.from_metadata` for the "gpt2" family: tiny test models and the
demo model train such a BPE and store it in their GGUF through this mapping.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from gguf.constants import TokenType
from tokenizers import Tokenizer as HFTokenizer


def bpe_metadata(tokenizer: HFTokenizer, *, bos_token: str, eos_token: str, pad_token: str | None = None,
                 mask_token: str | None = None, add_bos: bool = False,
                 chat_template: str | None = None) -> dict[str, Any]:
    """Metadata in the form `dg_chat.gguf.reader` returns it (lists of str, numpy token types).
    Added tokens become CONTROL when special, USER_DEFINED otherwise."""
    state = json.loads(tokenizer.to_str())
    pre = state.get("pre_tokenizer") or {}
    if state["model"]["type"] != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        raise ValueError("only a BPE with the GPT-2 ByteLevel pre-tokenizer maps to a 'gpt2' GGUF tokenizer")
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[token] for token in tokens] != list(range(len(tokens))):
        raise ValueError("token ids are not contiguous from 0")
    added = tokenizer.get_added_tokens_decoder()
    types = [TokenType.NORMAL if i not in added else TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED
             for i in range(len(tokens))]

    def token_id(token: str) -> int:
        if token not in vocab:
            raise ValueError(f"{token!r} is not in the vocabulary")
        return vocab[token]

    metadata: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": [" ".join(m) if isinstance(m, list) else m for m in state["model"]["merges"]],
        "tokenizer.ggml.token_type": np.array(types, dtype=np.int32),
        "tokenizer.ggml.bos_token_id": token_id(bos_token),
        "tokenizer.ggml.eos_token_id": token_id(eos_token),
        "tokenizer.ggml.add_bos_token": add_bos,
    }
    if pad_token is not None:
        metadata["tokenizer.ggml.padding_token_id"] = token_id(pad_token)
    if mask_token is not None:
        metadata["tokenizer.ggml.mask_token_id"] = token_id(mask_token)
    if chat_template is not None:
        metadata["tokenizer.chat_template"] = chat_template
    return metadata
