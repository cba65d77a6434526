"""The one event stream of a turn.

Producers (the block loop) never render; consumers (the TUI, `dg-chat ask`, benchmarks, tests)
never decide meaning. A turn yields, in order:

    PromptEncoded
    (CanvasStep* BlockCommitted)*      one group per canvas (block)
    TurnFinished | TurnFailed          exactly one, last
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class PromptEncoded:
    n_tokens: int | None
    """Tokens the backend had to encode (a cached prefix is not counted); None where a server
    tokenizes the prompt and does not say."""
    seconds: float


@dataclass(frozen=True, slots=True, eq=False)
class CanvasStep:
    """The canvas after one denoising step."""

    block: int
    """0-based index of the canvas within the turn."""
    step: int
    """1-based step within the block."""
    max_steps: int
    tokens: np.ndarray
    """int32 [canvas]: the canvas the next step starts from (accepted tokens, noise or mask elsewhere)."""
    argmax: np.ndarray
    """int32 [canvas]: the model's current best guess at every position; the block's output if it stops now."""
    accepted: np.ndarray
    """bool [canvas]: positions whose token was kept this step (False = noise / mask)."""
    changed: np.ndarray
    """bool [canvas]: positions whose `argmax` differs from the previous step's."""
    mean_entropy: float
    """Mean per-position entropy of the step's tempered distribution, in nats."""


@dataclass(frozen=True, slots=True, eq=False)
class BlockCommitted:
    """A finished canvas, cut after the first end-of-turn token."""

    block: int
    tokens: np.ndarray
    """int32: the block's kept tokens (up to and including an end token)."""
    steps: int
    """Denoising steps this block took."""
    thinking: str
    """The whole thinking text of the turn so far."""
    answer: str
    """The whole answer text of the turn so far."""
    final: bool
    """True if generation ends with this block (end token or canvas limit)."""


def _rate(count: float | None, per: float | None) -> float | None:
    """count / per; None if either is unknown, 0 when nothing was measured (per = 0)."""
    if count is None or per is None:
        return None
    return count / per if per > 0 else 0.0


@dataclass(slots=True)
class Stats:
    """What a turn measured. A remote server may not report a count: it is None (unknown), never 0."""

    prompt_tokens: int | None = 0
    """Tokens of the prompt; None: the server did not report them."""
    prompt_seconds: float = 0.0
    tokens: int | None = 0
    """Generated tokens kept (after the end-token cut); None: the server did not report them."""
    steps: list[int] = field(default_factory=list)
    """Denoising steps of each block; 0: the server did not report them (a block takes at least one)."""
    seconds: float = 0.0
    """Wall time of the denoising and commits (prompt encoding excluded)."""
    seed: int | None = None
    """The seed the turn used: pass it back (--seed) to reproduce the answer."""
    seed_confirmed: bool = True
    """False: `seed` was only requested from a server that does not say whether it used it (a server
    other than dg-chat's own), so passing it back may not reproduce the answer."""
    first_block_seconds: float = 0.0
    """Wall time from the start of the turn to its first committed block (prompt encoding included)."""
    truncated: bool = False
    """True if the answer has no end of turn: it filled every canvas it was allowed
    (max_canvases, or what the context had left) first."""
    context_full: bool = False
    """True if it was truncated because the context had no room for another canvas (a larger
    max_canvases would not have helped)."""
    server_limit: bool = False
    """True if a server other than dg-chat's own truncated it at a limit of its own (finish_reason
    "length": its max_tokens or context), which dg-chat's settings do not reach."""

    @property
    def blocks(self) -> int:
        return len(self.steps)

    @property
    def forwards(self) -> int | None:
        """Denoising steps of the turn; None if a block's are unknown."""
        return None if 0 in self.steps else sum(self.steps)

    @property
    def steps_per_block(self) -> float | None:
        return _rate(self.forwards, self.blocks)

    @property
    def tokens_per_second(self) -> float | None:
        return _rate(self.tokens, self.seconds)

    @property
    def prompt_tokens_per_second(self) -> float | None:
        return _rate(self.prompt_tokens, self.prompt_seconds)

    @property
    def tokens_per_forward(self) -> float | None:
        return _rate(self.tokens, self.forwards)

    def to_dict(self) -> dict:
        """The fields and the derived rates, JSON-ready (None: unknown)."""
        data = asdict(self)
        for name in ("blocks", "forwards", "steps_per_block", "tokens_per_second",
                     "prompt_tokens_per_second", "tokens_per_forward"):
            data[name] = getattr(self, name)
        return data


@dataclass(frozen=True, slots=True, eq=False)
class TurnFinished:
    answer: str
    thinking: str
    token_ids: list[int]
    """Every generated token kept, end token included."""
    stats: Stats
    stopped: bool = False
    """True if the user cancelled; answer and thinking hold the committed blocks and the argmax
    canvas of the cancelled block's last step (cut at its first end token)."""


EMPTY_ANSWER = "(the model ended its turn without text)"
"""What every consumer shows for a finished answer without text (its first token was an end token)."""


@dataclass(frozen=True, slots=True)
class TurnFailed:
    error: str
    """One readable line."""


Event = PromptEncoded | CanvasStep | BlockCommitted | TurnFinished | TurnFailed
