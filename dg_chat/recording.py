"""Recording answers as they are generated: durable partial text and compact replay frames.

Runs on the engine worker thread, not the UI: persistence must not depend on the UI loop
keeping up (or still being alive). No Textual import here.

A block's frames are stored as deltas: per step, the canvas positions whose token changed
since the previous step and their new tokens, plus the accepted and changed masks as bits.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from dg_chat.engine.events import BlockCommitted, CanvasStep, Event, TurnFailed, TurnFinished
from dg_chat.store import Store, StoreError, finished_status


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """What the canvas shows after one step; a live CanvasStep or one rebuilt from a recording."""

    block: int
    step: int
    max_steps: int
    mean_entropy: float
    tokens: np.ndarray
    accepted: np.ndarray
    changed: np.ndarray

    @classmethod
    def from_step(cls, step: CanvasStep) -> Frame:
        return cls(step.block, step.step, step.max_steps, step.mean_entropy,
                   step.tokens, step.accepted, step.changed)


class BlockRecording:
    """The frames of one block, kept as per-step deltas."""

    def __init__(self, block: int) -> None:
        self.block = block
        self._previous: np.ndarray | None = None
        self._meta: list[tuple[int, int, float, int]] = []  # step, max_steps, mean entropy, n changed
        self._positions: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        self._accepted: list[np.ndarray] = []
        self._changed: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._meta)

    def add(self, step: CanvasStep) -> None:
        tokens = np.asarray(step.tokens, dtype=np.int32)
        if self._previous is None:
            positions = np.arange(len(tokens), dtype=np.uint32)
        elif len(tokens) != len(self._previous):
            return  # a canvas that changes length within its block (a server's odd events): not replayable
        else:
            positions = np.flatnonzero(tokens != self._previous).astype(np.uint32)
        self._previous = tokens.copy()  # an engine may reuse its buffers
        self._meta.append((step.step, step.max_steps, float(step.mean_entropy), len(positions)))
        self._positions.append(positions)
        self._values.append(tokens[positions])
        self._accepted.append(np.packbits(np.asarray(step.accepted, dtype=bool)))
        self._changed.append(np.packbits(np.asarray(step.changed, dtype=bool)))

    def encode(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            block=np.array([self.block, len(self._previous) if self._previous is not None else 0]),
            meta=np.array(self._meta, dtype=np.float64).reshape(-1, 4),
            positions=np.concatenate(self._positions or [np.zeros(0, np.uint32)]),
            values=np.concatenate(self._values or [np.zeros(0, np.int32)]),
            accepted=np.stack(self._accepted) if self._accepted else np.zeros((0, 0), np.uint8),
            changed=np.stack(self._changed) if self._changed else np.zeros((0, 0), np.uint8),
        )
        return buffer.getvalue()


def decode_block(data: bytes) -> list[Frame]:
    """The frames of a block saved with `BlockRecording.encode`. Raises StoreError if they are
    damaged (the history database is a file a user or a crash can harm)."""
    try:
        return _decode_block(data)
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, MemoryError, zipfile.BadZipFile,
            zlib.error):
        raise StoreError("the recorded denoising steps of this answer are damaged: it cannot be replayed") from None


def _decode_block(data: bytes) -> list[Frame]:
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        block, length = (int(x) for x in arrays["block"])
        meta, positions, values = arrays["meta"], arrays["positions"], arrays["values"]
        accepted, changed = arrays["accepted"], arrays["changed"]
    frames: list[Frame] = []
    tokens = np.zeros(length, dtype=np.int32)
    offset = 0
    for i, (step, max_steps, entropy, count) in enumerate(meta):
        count = int(count)
        tokens = tokens.copy()
        tokens[positions[offset:offset + count]] = values[offset:offset + count]
        offset += count
        frames.append(Frame(block, int(step), int(max_steps), float(entropy), tokens,
                            np.unpackbits(accepted[i], count=length).astype(bool),
                            np.unpackbits(changed[i], count=length).astype(bool)))
    return frames


class AnswerRecorder:
    """Keeps one model message of the store up to date with the events of its turn."""

    def __init__(self, store: Store, message_id: int) -> None:
        self.store = store
        self.message_id = message_id
        self.result: TurnFinished | TurnFailed | None = None
        self._block: BlockRecording | None = None
        self._thinking = ""
        self._answer = ""

    def record(self, event: Event) -> None:
        if isinstance(event, CanvasStep):
            if self._block is None or self._block.block != event.block:
                self._save_block()
                self._block = BlockRecording(event.block)
            self._block.add(event)
        elif isinstance(event, BlockCommitted):
            self._save_block()
            self._thinking, self._answer = event.thinking, event.answer
            self.store.update_message(self.message_id, content=event.answer, thinking=event.thinking,
                                      status="partial")
        elif isinstance(event, TurnFinished):
            self._end(event)
            self.store.update_message(self.message_id, content=event.answer, thinking=event.thinking,
                                      status=finished_status(event.stopped),
                                      stats=event.stats.to_dict())
        elif isinstance(event, TurnFailed):
            self._end(event)
            self.store.update_message(self.message_id, content=self._answer, thinking=self._thinking,
                                      status="failed", error=event.error)

    def _end(self, result: TurnFinished | TurnFailed) -> None:
        self.result = result
        self._save_block()  # an interrupted block stays replayable up to its last step

    def _save_block(self) -> None:
        if self._block is not None and len(self._block):
            self.store.save_frames(self.message_id, self._block.block, self._block.encode())
        self._block = None
