"""Child process of test_tui_crash: chats through the app until the second block is being
denoised, says so on stdout, then waits to be killed."""

from __future__ import annotations

import asyncio

from dg_chat.config import Settings
from dg_chat.store import Store
from dg_chat.tui.app import DgChatApp
from tests.tui.conftest import paused, send
from tests.tui.fake_engine import ScriptedEngine, factory

ANSWER = "The quick brown fox jumps over the lazy dog. " * 10


async def main() -> None:
    engine = ScriptedEngine(lambda m: ANSWER, pause_at=(1, 3))
    app = DgChatApp(Settings(model="scripted"), store=Store(), engine_factory=factory(engine))
    async with app.run_test() as pilot:
        await send(pilot, "please survive a crash", wait=False)
        await paused(pilot, engine)
        print("mid-turn", flush=True)
        await asyncio.Event().wait()


asyncio.run(main())
