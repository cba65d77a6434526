"""How the tokens of a canvas are shown, live in the TUI and by `dg-chat ask --show-steps`.

One piece of text and one kind per position, up to the first accepted end-of-turn token (what
follows it is cut off the output): end tokens and lone bytes of a character (a piece that decodes
to U+FFFD) are one quiet placeholder cell each, noise is cut short, a mask token is one glyph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import numpy as np

NOISE_CHARS = 4
"""Noise tokens are cut to this many characters: they are shown to look scrambled, not read,
and random vocabulary pieces can be long."""
MASK_GLYPH = "░"
END_GLYPH = "·"
BYTE_GLYPH = "◌"
Kind = Literal["accepted", "changed", "noise", "quiet"]
LEGEND: tuple[tuple[str, Kind], ...] = (
    ("accepted", "accepted"), ("changed", "changed"), ("noise", "noise"),
    (f"{END_GLYPH} end", "quiet"), (f"{BYTE_GLYPH} byte", "quiet"))
"""What each kind means, as (label, kind), for a one-line legend."""


def block_count(n: int) -> str:
    """"1 block", "3 blocks": how many canvases an answer took."""
    return f"{n} block{'s' if n != 1 else ''}"


class Canvas(Protocol):
    """A step's canvas as shown (CanvasStep, the TUI's frames): read-only here."""

    @property
    def tokens(self) -> np.ndarray: ...
    @property
    def accepted(self) -> np.ndarray: ...
    @property
    def changed(self) -> np.ndarray: ...


def token_runs(canvas: Canvas, piece: Callable[[int], str], mask_id: int | None,
               end_ids: frozenset[int] = frozenset()) -> list[tuple[str, Kind]]:
    """(text, kind) per position, up to the first accepted end token: kind is "accepted",
    "changed" (accepted and changed this step), "noise" or "quiet" (a placeholder cell)."""
    runs: list[tuple[str, Kind]] = []
    for token, accepted, changed in zip(canvas.tokens.tolist(), canvas.accepted.tolist(), canvas.changed.tolist(),
                                        strict=True):
        text = piece(token)
        if token in end_ids:
            runs.append((END_GLYPH, "quiet"))
            if accepted:
                break
        elif token == mask_id:
            runs.append((MASK_GLYPH, "noise"))
        elif "\ufffd" in text:
            runs.append((BYTE_GLYPH, "quiet"))
        elif accepted:
            runs.append((text, "changed" if changed else "accepted"))
        else:
            runs.append((text[:NOISE_CHARS], "noise"))
    return runs
