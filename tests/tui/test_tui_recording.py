"""Replay frames and durable answers, recorded from engine events without any UI."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dg_chat.config import SamplerSettings, Settings
from dg_chat.engine.events import BlockCommitted, CanvasStep
from dg_chat.recording import AnswerRecorder, BlockRecording, decode_block
from dg_chat.store import StoreError
from dg_chat.text.chat import Message
from tests.tui.fake_engine import ScriptedEngine

LONG = "The quick brown fox jumps over the lazy dog. " * 10


def record_turn(store, engine, sampler=None, cancel=None):
    chat = store.create_chat("t", Settings())
    message = store.add_message(chat, "model", "", status="partial")
    recorder = AnswerRecorder(store, message)
    events = []
    for event in engine.turn([Message("user", "hi")], sampler or SamplerSettings(), cancel):
        recorder.record(event)
        events.append(event)
    return message, events, recorder


def test_replay_rebuilds_every_frame_of_every_block(store):
    message, events, recorder = record_turn(store, ScriptedEngine(lambda m: LONG),
                                            SamplerSettings(thinking=True, seed=3))
    steps = [e for e in events if isinstance(e, CanvasStep)]
    replayed = [frame for data in store.frames(message) for frame in decode_block(data)]
    commits = [e for e in events if isinstance(e, BlockCommitted)]
    assert len(replayed) == len(steps) == 6 * len(commits) and len(commits) == 3
    for step, frame in zip(steps, replayed, strict=True):
        assert (frame.block, frame.step, frame.max_steps) == (step.block, step.step, step.max_steps)
        assert frame.mean_entropy == step.mean_entropy
        assert np.array_equal(frame.tokens, step.tokens)
        assert np.array_equal(frame.accepted, step.accepted) and np.array_equal(frame.changed, step.changed)
    stored = store.messages(store.chats()[0].id)[0]
    assert stored.status == "complete" and stored.content == LONG and stored.thinking.startswith("First I read")
    assert stored.stats["tokens"] == recorder.result.stats.tokens


def test_damaged_frames_are_a_store_error_not_a_crash():
    tokens = np.arange(16, dtype=np.int32)
    recording = BlockRecording(block=0)
    recording.add(CanvasStep(0, 1, 1, tokens, tokens, tokens < 8, tokens < 16, 0.5))
    good = recording.encode()
    for damaged in (b"PK\x03\x04\xde\xad\xbe\xef", good[: len(good) // 2], b"", b"not an npz"):
        with pytest.raises(StoreError, match="damaged"):
            decode_block(damaged)


def test_a_recording_with_flipped_bits_decodes_or_is_damaged():
    """A bit-damaged history: any single flipped bit gives frames or a StoreError, never another error."""
    rng = np.random.default_rng(0)
    recording = BlockRecording(block=0)
    tokens = rng.integers(0, 4096, 256, dtype=np.int32)
    for step in range(1, 13):
        tokens = np.where(rng.random(256) < 0.3, rng.integers(0, 4096, 256, dtype=np.int32), tokens)
        recording.add(CanvasStep(0, step, 12, tokens, tokens, tokens < 2048, tokens < 1024, 0.5))
    good = bytearray(recording.encode())
    for bit in rng.choice(8 * len(good), 400, replace=False):
        damaged = good.copy()
        damaged[bit // 8] ^= 1 << (bit % 8)
        try:
            decode_block(bytes(damaged))
        except StoreError:
            pass


def test_a_step_whose_canvas_changes_length_is_left_out_of_the_recording():
    """A server may send canvas events of another length within one block: the block stays replayable."""
    short, longer = np.arange(3, dtype=np.int32), np.arange(20, dtype=np.int32)
    recording = BlockRecording(block=0)
    recording.add(CanvasStep(0, 1, 3, short, short, short < 1, short < 3, 0.5))
    recording.add(CanvasStep(0, 2, 3, longer, longer, longer < 2, longer < 20, 0.4))
    recording.add(CanvasStep(0, 3, 3, short + 1, short, short < 3, short < 3, 0.0))
    frames = decode_block(recording.encode())
    assert [f.step for f in frames] == [1, 3] and np.array_equal(frames[1].tokens, short + 1)


def test_only_changed_positions_are_stored():
    length = 300  # not a multiple of 8: the packed masks must be cut back to the canvas
    tokens = np.arange(length, dtype=np.int32)
    mask = np.zeros(length, bool)
    recording = BlockRecording(block=2)
    recording.add(CanvasStep(2, 1, 3, tokens, tokens, mask, ~mask, 1.5))
    recording.add(CanvasStep(2, 2, 3, tokens.copy(), tokens, mask | (tokens < 10), mask, 0.5))
    changed = tokens.copy()
    changed[[5, 299]] = 7
    recording.add(CanvasStep(2, 3, 3, changed, changed, ~mask, mask, 0.0))
    small = recording.encode()
    frames = decode_block(small)
    assert [f.step for f in frames] == [1, 2, 3] and all(f.block == 2 for f in frames)
    assert np.array_equal(frames[1].tokens, tokens) and frames[1].accepted.sum() == 10
    assert np.array_equal(frames[2].tokens, changed) and frames[2].accepted.all()
    assert frames[0].changed.all() and not frames[2].changed.any()

    every_step_new = BlockRecording(block=0)
    for step in range(3):
        every_step_new.add(CanvasStep(0, step + 1, 3, tokens + step * 1000, tokens, mask, mask, 0.0))
    assert len(small) < len(every_step_new.encode())


def test_a_stopped_turn_keeps_its_unfinished_block(store):
    cancel = threading.Event()
    chat = store.create_chat("t", Settings())
    message = store.add_message(chat, "model", "", status="partial")
    recorder = AnswerRecorder(store, message)
    committed = []
    for event in ScriptedEngine(lambda m: LONG).turn([Message("user", "hi")], SamplerSettings(), cancel):
        recorder.record(event)
        if isinstance(event, CanvasStep) and (event.block, event.step) == (1, 2):
            cancel.set()  # what Esc does
        if isinstance(event, BlockCommitted):
            committed.append(event.answer)
    stored = store.messages(chat)[0]
    first_block, with_partial_block = committed
    assert stored.status == "stopped" and stored.content == with_partial_block  # the stopped block's best guess
    assert LONG.startswith(first_block) and with_partial_block.startswith(first_block)
    assert len(with_partial_block) > len(first_block)
    blocks = [decode_block(data) for data in store.frames(message)]
    assert [len(frames) for frames in blocks] == [6, 2]


def test_a_failed_turn_keeps_the_committed_text(store):
    message, events, _ = record_turn(store, ScriptedEngine(lambda m: LONG, fail_in_block=1))
    stored = store.messages(store.chats()[0].id)[0]
    assert stored.status == "failed" and stored.error.startswith("CUDA out of memory")
    assert stored.content == [e for e in events if isinstance(e, BlockCommitted)][-1].answer
    assert len(store.frames(message)) == 2


def test_partial_text_is_stored_at_every_commit(store):
    chat = store.create_chat("t", Settings())
    message = store.add_message(chat, "model", "", status="partial")
    recorder = AnswerRecorder(store, message)
    turn = ScriptedEngine(lambda m: LONG).turn([Message("user", "hi")], SamplerSettings())
    for event in turn:
        recorder.record(event)
        if isinstance(event, BlockCommitted):
            break  # as if the process died here
    stored = store.messages(chat)[0]
    assert stored.status == "partial" and stored.content and LONG.startswith(stored.content)
