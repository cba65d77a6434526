"""`TurnEngine`: what the chat front ends (the TUI, `dg-chat ask`) use of a loaded model.

`dg_chat.engine.engine.Engine` (a local GGUF) is one; an engine that runs the model elsewhere (a
server) is another; the TUI tests' scripted engine is checked against it (tests/test_turn_engine.py).
Front ends talk to this protocol and the events of a turn, never to a backend's compute methods.

Imports neither torch nor textual: the TUI names it at start-up, before any model is loaded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from dg_chat.config import SamplerSettings
from dg_chat.engine.events import Event
from dg_chat.engine.model_info import ModelInfo
from dg_chat.text.chat import Message

Noise = Literal["uniform", "mask"]
""""uniform": canvases start as random tokens (DiffusionGemma); "mask": as mask tokens (Dream, LLaDA, RND1)."""



def context_overflow(n_prompt: int, canvas_length: int, context_length: int, *, at_least: bool = False) -> str | None:
    """Why a prompt of `n_prompt` tokens (`at_least`: or more) cannot be answered (it leaves no room
    for one canvas), else None. States the fact only: what to do about it depends on the front end
    (a chat can start anew)."""
    if context_length - n_prompt >= canvas_length:
        return None
    return (f"the prompt has {'at least ' if at_least else ''}{n_prompt} tokens; with a {canvas_length}-token "
            f"canvas it exceeds the model's context of {context_length} tokens")


@dataclass(frozen=True, slots=True)
class ContextUse:
    """How much of the model's context a conversation fills (its prompt and one canvas must fit)."""

    prompt: int
    """Tokens of the whole prompt the model would read."""
    last_message: int
    """Tokens of the last message's text alone (the draft the prompt area counts)."""
    canvas: int
    context: int
    exact: bool = True
    """False: `prompt` and `last_message` are lower bounds (`SpecialTokenText.fewest_tokens`), which
    already exceed the context."""

    @property
    def problem(self) -> str | None:
        """Why the conversation cannot be answered, else None."""
        return context_overflow(self.prompt, self.canvas, self.context, at_least=not self.exact)

    @property
    def fits(self) -> bool:
        return self.problem is None

@runtime_checkable
class TokenPieces(Protocol):
    """How a front end shows the token ids of a canvas."""

    def piece(self, token_id: int) -> str:
        """The text of one token as it stands in a canvas."""
        ...


@runtime_checkable
class BackendView(Protocol):
    """What a front end reads of the backend (read-only; every backend of engine/backends is one)."""

    @property
    def name(self) -> str:
        """What computes: "torch", "llama", or a server's kind."""
        ...

    @property
    def device(self) -> str:
        """Where it computes: "cpu", "cuda:0", a server's host:port."""
        ...

    @property
    def noise(self) -> Noise | None:
        """How canvases start (None: not known here, e.g. on a server: the settings screen then offers
        the knobs of every family)."""
        ...

    @property
    def mask_token_id(self) -> int | None:
        """The mask token of "mask" models (shown as a quiet cell), else None."""
        ...


@runtime_checkable
class TurnEngine(Protocol):
    """A loaded model that answers conversations turn by turn (see the module docstring)."""

    @property
    def name(self) -> str:
        """The model's name (general.name of the GGUF, or the server's model id)."""
        ...

    @property
    def end_ids(self) -> frozenset[int]:
        """Token ids that end an answer (shown as quiet cells in a canvas)."""
        ...

    @property
    def tokenizer(self) -> TokenPieces:
        ...

    @property
    def backend(self) -> BackendView:
        ...

    @property
    def info(self) -> ModelInfo:
        """The model that answers, as recorded with every answer."""
        ...

    @property
    def thinks(self) -> bool | None:
        """Whether the model has a thinking channel (what `SamplerSettings.thinking` turns on);
        None: not known here (a server renders the prompt)."""
        ...

    def prompt_ids(self, messages: Sequence[Message], thinking: bool) -> list[int] | None:
        """The token ids the model would read for `messages`; None where the prompt is rendered
        and tokenized elsewhere (a server): no local context check, no token gauge."""
        ...

    def context_use(self, messages: Sequence[Message], thinking: bool) -> ContextUse | None:
        """How much of the context `messages` would fill; None where the prompt is tokenized elsewhere
        (a server: it checks the context itself, and a turn it refuses fails with its reason)."""
        ...

    def turn(self, messages: Sequence[Message], sampler: SamplerSettings,
             cancel: threading.Event | None = None) -> Iterator[Event]:
        """Answer the conversation's last user message. Blocking: run it off the UI thread. Yields
        the events of engine/events.py, always ending with TurnFinished or TurnFailed; never raises
        for engine failures. Setting `cancel` stops the answer at the next step, keeping what it has."""
        ...

    def close(self) -> None:
        """Free the model; the engine is unusable afterwards."""
        ...


def thinking_unavailable(engine: TurnEngine, thinking: bool) -> str | None:
    """What to tell a user who turned thinking on for a model without a thinking channel, else None
    (also where it is not known, on a server). Raw text: the CLI's warnings and the app's notices
    show its controls."""
    if thinking and engine.thinks is False:
        return f"{engine.name} has no thinking channel: it answers without thinking first"
    return None
