"""The app on the real PyTorch engine: a tiny random DiffusionGemma GGUF with the Gemma 4
tokenizer answers (gibberish) live and is stored and replayable; on a fresh install the shipped
demo model denoises a typed prompt into words."""

from __future__ import annotations

from dg_chat.config import Settings
from dg_chat.engine.loader import load_engine
from dg_chat.recording import decode_block
from dg_chat.tui.app import DgChatApp
from dg_chat.tui.screens.first_run import FirstRunScreen
from dg_chat.tui.screens.replay import ReplayScreen
from dg_chat.tui.widgets.canvas import CanvasFrame
from dg_chat.tui.widgets.message import MessageView
from tests.support.scripts import load_script
from tests.tui.conftest import SIZE, send, wait_until


async def test_a_turn_on_the_torch_engine(make_app, store, tiny_chat_gguf):
    settings = Settings(model=str(tiny_chat_gguf), device="cpu")
    settings.sampler.max_steps, settings.sampler.max_canvases, settings.sampler.seed = 3, 2, 5
    frames = []
    app = make_app(settings=settings, engine_factory=load_engine)
    async with app.run_test(size=SIZE, message_hook=lambda m: isinstance(m, CanvasFrame) and frames.append(m)) as pilot:
        await send(pilot, "Why is the sky blue?")
        assert not app.engine_error
        assert app.status.status.backend == "torch" and app.status.status.tokens_per_second
        answer = app.query(MessageView).last()
        assert answer.status == "complete"
        assert frames and all(len(m.frame.tokens) == 16 for m in frames)  # the tiny model's canvas
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ReplayScreen))
    stored = store.messages(app.chat_id)[-1]
    assert stored.status == "complete" and stored.content == answer.content
    blocks = [decode_block(data) for data in store.frames(stored.id)]
    assert 1 <= len(blocks) <= 2 and all(1 <= len(frames) <= 3 for frames in blocks)
    assert stored.stats["seed"] == 5


async def test_a_fresh_install_denoises_a_typed_prompt_into_words_on_the_demo(store, tmp_path):
    """What the README's run command does: no model configured, so the first-run screen; Enter
    starts the shipped demo model; a typed prompt denoises live from noise into words."""
    train_demo = load_script("train_demo")
    settings = Settings(device="cpu")
    settings.sampler.seed = 3
    frames = []
    app = DgChatApp(settings, store=store, engine_factory=load_engine, export_dir=tmp_path)

    def hook(m):
        if isinstance(m, CanvasFrame):
            frames.append(m.frame)

    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, FirstRunScreen))
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.engine is not None, timeout=60)
        await send(pilot, "Who's there?")
        assert not app.engine_error
        answer = app.query(MessageView).last()
        assert answer.status == "complete"
    assert len({f.step for f in frames}) > 1 and all(len(f.tokens) == train_demo.CANVAS for f in frames)
    assert frames[0].accepted.mean() < frames[-1].accepted.mean()  # noise first, settled tokens last
    words = train_demo.words(answer.content)
    known = train_demo.read_word_list(train_demo.ROOT / "models" / "demo-words.txt.gz")
    assert words and sum(w in known for w in words) >= 0.6 * len(words), answer.content
