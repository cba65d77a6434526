"""A `tokenizers` tokenizer built from GGUF tokenizer metadata.

(Interface stub: built in the foundation issue.)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence


class Tokenizer:
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    mask_id: int | None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> "Tokenizer":
        raise NotImplementedError

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Plain text to ids. Never parses special tokens: '<|turn>' typed by a user stays text."""
        raise NotImplementedError

    def token_id(self, token: str) -> int:
        """The id of one vocabulary entry, e.g. token_id('<|turn>') == 105 for Gemma 4."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        raise NotImplementedError

    def piece(self, token_id: int) -> str:
        """Printable text of one token for the live canvas (no control characters)."""
        raise NotImplementedError
