"""The open chat: its transcript, the live canvas, the prompt and the context gauge (the #main column).

The pane holds the chat on screen (its id, its settings, the message being edited) and runs its
turns (turns.py): it sends the prompt, regenerates, edits the last message, switches answer versions,
replays answers and changes the chat's settings. The app loads the engine into it, lists the chats
and binds the keys (bindings.py), whose actions call the pane.
"""

from __future__ import annotations

import asyncio
import copy

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import TextArea

from dg_chat.config import SamplerSettings, Settings, load_settings
from dg_chat.config_file import save_defaults
from dg_chat.engine.model_info import ModelInfo
from dg_chat.engine.remote.spec import is_remote
from dg_chat.engine.turn_engine import TurnEngine, thinking_unavailable
from dg_chat.errors import DgChatError
from dg_chat.recording import decode_block
from dg_chat.store import Store, title_from
from dg_chat.text.chat import Message as ChatMessage
from dg_chat.tui.failures import recoverable
from dg_chat.tui.screens.replay import ReplayScreen
from dg_chat.tui.screens.settings import SettingsChoice, SettingsScreen, defaults_to_save
from dg_chat.tui.turns import Turn, TurnEvent, Turns, conversation, run_turn
from dg_chat.tui.widgets.canvas import CanvasView
from dg_chat.tui.widgets.gauge import DELAY as GAUGE_DELAY, ContextGauge
from dg_chat.tui.widgets.message import GENERATING, MessageView
from dg_chat.tui.widgets.prompt import Prompt
from dg_chat.tui.widgets.status import StatusBar
from dg_chat.tui.widgets.transcript import Transcript
from dg_chat.tui.widgets.welcome import Welcome


class ChatPane(Vertical):
    class Stored(Message):
        """A message of chat `chat_id` was stored (a new chat, or one that moves to the top of the list)."""

        def __init__(self, chat_id: int) -> None:
            super().__init__()
            self.chat_id = chat_id

    def __init__(self, store: Store, settings: Settings, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.store = store
        self.settings = settings
        """The app's settings: new chats start with them."""
        self._engine: TurnEngine | None = None
        self._answered_here: set[int] = set()
        """Answers of the loaded engine in this session: a server's canvas pieces are numbered per
        connection and not stored, so only these of its answers can be replayed."""
        self.engine_error = ""
        self.loading = False
        """A model is being loaded: the first, or one picked to replace `engine`, which then must
        not start an answer that the replacement would cut into."""
        self.chat_id: int | None = None
        self.chat_settings = copy.deepcopy(settings)
        self.turns = Turns()
        self._editing: int | None = None
        """Id of the user message being edited; resending replaces it and what follows."""

    @property
    def engine(self) -> TurnEngine | None:
        return self._engine

    @engine.setter
    def engine(self, engine: TurnEngine | None) -> None:
        self._engine = engine
        self._answered_here.clear()

    def compose(self) -> ComposeResult:
        yield Transcript(id="transcript")
        yield CanvasView(fps=self.settings.ui.canvas_fps, id="canvas")
        yield Prompt(id="prompt")
        yield ContextGauge(id="gauge")

    @property
    def generating(self) -> bool:
        """A turn is running (or being stopped)."""
        return self.turns.current is not None

    @property
    def status(self) -> StatusBar:
        return self.screen.query_one(StatusBar)

    @property
    def transcript(self) -> Transcript:
        return self.query_one(Transcript)

    def busy(self) -> bool:
        if self.generating:
            self.notify("An answer is being generated: wait for it, or press Esc to stop it.", severity="warning")
            return True
        return False

    def _can_answer(self) -> bool:
        if self.busy():
            return False
        if self.loading or self.engine is None:
            reason = (not self.loading and self.engine_error) or "the model is still loading"
            self.notify(f"No model to answer with: {reason}", severity="warning", markup=False)
            return False
        return True

    def _history(self, before: int | None = None) -> list[ChatMessage]:
        """The conversation as the model sees it (`before`: only the messages stored before that id)."""
        return conversation(self.store, self.chat_id, self.chat_settings.system_prompt, before)

    # sending and turns

    @on(TextArea.Changed, "#prompt")
    @work(exclusive=True, group="gauge", exit_on_error=False)
    async def _measure_draft(self) -> None:
        await asyncio.sleep(GAUGE_DELAY)  # exclusive: a later key cancels this measurement
        draft = self.query_one(Prompt).text
        size = None
        if self.engine is not None and draft.strip():
            history = self._history(before=self._editing)  # an edit replaces its message and what follows
            size = self.engine.context_use([*history, ChatMessage("user", draft)], self.chat_settings.sampler.thinking)
        self.query_one(ContextGauge).show(size)

    @on(Prompt.Submitted)
    @recoverable
    async def _send(self, message: Prompt.Submitted) -> None:
        if not self._can_answer():
            self.query_one(Prompt).restore(message.text)
            return
        assert self.engine is not None
        asked = [*self._history(before=self._editing), ChatMessage("user", message.text)]
        use = self.engine.context_use(asked, self.chat_settings.sampler.thinking)
        if use is not None and (problem := use.problem):  # None: a server checks its context itself
            self.query_one(Prompt).restore(message.text)
            self.notify(f"Not sent: {problem}. Start a new chat or shorten your message.", severity="error",
                        timeout=20, markup=False)
            return
        try:
            # Stored before anything is generated: the question survives whatever happens next.
            if self._editing is not None:  # and the old exchange stays if the new one cannot be stored
                message_id = self.store.resend(self._editing, message.text)
            else:
                if self.chat_id is None:
                    self.chat_id = self.store.create_chat(title_from(message.text), self.chat_settings)
                message_id = self.store.add_message(self.chat_id, "user", message.text)
        except DgChatError:
            self.query_one(Prompt).restore(message.text)
            raise
        assert self.chat_id is not None  # an edited message is in the chat shown
        if self._editing is not None:
            await self.transcript.remove_from(self._editing)
            self._editing = None
            self.query_one(Prompt).end_edit(cancelled=False)
        await self._start_turn(MessageView("user", message.text, message_id=message_id))
        self.post_message(self.Stored(self.chat_id))

    async def _start_turn(self, *new_views: MessageView) -> None:
        """Start the engine on the conversation, then show `new_views` and the coming answer."""
        assert self.engine is not None and self.chat_id is not None
        history = self._history()
        model = self.engine.info
        message_id = self.store.add_message(self.chat_id, "model", "", status="partial", model=model)
        self._answered_here.add(message_id)
        versions = len(self.store.versions(message_id))  # earlier ones: regenerated
        self.status.new_turn(blocks=self.chat_settings.sampler.max_canvases)
        turn = self.turns.start(message_id, MessageView("model", status=GENERATING, message_id=message_id,
                                                        model=model, version=(versions, versions)))
        canvas = self.query_one(CanvasView)
        canvas.start(turn.id)  # before the first frame can arrive
        self._generate(turn, self.engine, history, copy.deepcopy(self.chat_settings.sampler), canvas)
        await self.transcript.add(*new_views, turn.view)
        canvas.display = self.settings.ui.show_canvas
        self.transcript.scroll_end(animate=False)

    @work(thread=True, group="turn", exit_on_error=False)
    def _generate(self, turn: Turn, engine: TurnEngine, messages: list[ChatMessage], sampler: SamplerSettings,
                  canvas: CanvasView) -> None:
        run_turn(self.store, turn, engine, messages, sampler, to_canvas=canvas.post_message, to_ui=self.post_message)

    async def on_turn_event(self, message: TurnEvent) -> None:
        await self.turns.show(message, self.query_one(CanvasView), self.status, self)

    @on(CanvasView.Painted, "#canvas")
    def _show_progress(self, message: CanvasView.Painted) -> None:
        turn = self.turns.current
        if turn is not None and not turn.detached:
            frame = message.frame
            self.status.set(block=frame.block + 1, step=frame.step, max_steps=frame.max_steps)

    def stop(self) -> None:
        """Stop the answer at its next step, or else cancel an edit."""
        if self.turns.stop():
            self.status.set(state="stopping…")
        elif self._editing is not None:
            self._editing = None
            self.query_one(Prompt).end_edit(cancelled=True)
            self.notify("Edit cancelled")

    async def regenerate(self) -> None:
        if not self._can_answer():
            return
        views = self.transcript.views()
        if not views or self.chat_id is None:
            self.notify("Nothing to regenerate yet", severity="warning")
            return
        if views[-1].role == "model" and views[-1].message_id is not None:
            self.store.supersede(views[-1].message_id)  # kept as an earlier version (◀ ▶ on the answer)
            await views[-1].remove()
        await self._start_turn()

    def edit_last(self) -> None:
        if self.busy():
            return
        users = [v for v in self.transcript.views() if v.role == "user"]
        if not users:
            self.notify("No message to edit yet", severity="warning")
            return
        prompt = self.query_one(Prompt)
        if self._editing is None:
            prompt.begin_edit(users[-1].content)
        prompt.focus()
        self._editing = users[-1].message_id
        self.notify("Editing your last message: Enter resends it and replaces the answer, Esc cancels.")

    async def show_chat(self, chat_id: int | None) -> None:
        """Show a saved chat, or an empty new one (None). A turn in progress is stopped. If the
        history cannot be read (StoreError), the chat shown stays, and so does the chat written to."""
        settings = self.store.chat_settings(chat_id) if chat_id is not None else copy.deepcopy(self.settings)
        messages = self.store.messages(chat_id) if chat_id is not None else []
        versions = self.store.version_numbers(chat_id) if chat_id is not None else {}
        if self.turns.detach():
            canvas = self.query_one(CanvasView)
            canvas.stop()
            canvas.display = False
            self.status.end_turn("stopping…")
        if self._editing is not None:
            self._editing = None
            self.query_one(Prompt).end_edit(cancelled=True)
        self.chat_id, self.chat_settings = chat_id, settings
        with self.app.batch_update():
            model = self.engine.info if self.engine is not None else None
            await self.transcript.show(messages, versions, Welcome(model, self.engine_error))
        self.transcript.scroll_end(animate=False)
        self.status.set(thinking=self.chat_settings.sampler.thinking)

    # answers: versions and replays

    @on(MessageView.VersionRequested)
    @recoverable
    async def _show_version(self, message: MessageView.VersionRequested) -> None:
        view = message.view
        if self.busy() or view.message_id is None:
            return
        versions = self.store.versions(view.message_id)
        number = view.version[0] - 1 + message.direction
        if not 0 <= number < len(versions):
            return
        self.store.choose_version(versions[number].id)
        shown = await self.transcript.replace(view, versions[number], (number + 1, len(versions)))
        shown.focus()

    @on(MessageView.ReplayRequested)
    @recoverable
    def _replay(self, message: MessageView.ReplayRequested) -> None:
        view = message.view
        if view.role != "model" or view.message_id is None:
            self.notify("Only answers can be replayed", severity="warning")
            return
        if self.engine is None:
            self.notify("Replay shows tokens with the model's tokenizer: load a model first", severity="warning")
            return
        if problem := self._replay_problem(view.message_id, view.model):
            self.notify(problem, severity="warning", markup=False)
            return
        blocks = [decode_block(data) for data in self.store.frames(view.message_id)]
        if not any(blocks):
            self.notify("No denoising steps were recorded for this answer", severity="warning")
            return
        self.app.push_screen(ReplayScreen(blocks, self.engine.tokenizer.piece,
                                          self.engine.backend.mask_token_id, self.engine.end_ids))

    def _replay_problem(self, message_id: int, wrote: ModelInfo | None) -> str | None:
        """Why the loaded model cannot replay an answer, whose frames are token ids of the model that wrote it."""
        assert self.engine is not None
        if wrote is None:  # recorded before answers named their model: the loaded one is all there is
            return None
        if wrote.file != self.engine.info.file:
            return f"This answer was written by {wrote.title()}: load that model (F2) to replay it"
        if is_remote(wrote.file) and message_id not in self._answered_here:
            return "A server's answer can be replayed only in the session that received it"
        return None

    def replay_last(self) -> None:
        answers = [v for v in self.transcript.views() if v.role == "model"]
        if not answers:
            self.notify("No answer to replay yet", severity="warning")
            return
        answers[-1].action_replay()

    # the chat's settings

    def _save_chat_settings(self) -> None:
        if self.chat_id is not None:
            self.store.set_chat_settings(self.chat_id, self.chat_settings)
        self.status.set(thinking=self.chat_settings.sampler.thinking)

    def toggle_thinking(self) -> None:
        sampler = self.chat_settings.sampler
        sampler.thinking = not sampler.thinking
        self._save_chat_settings()
        warning = thinking_unavailable(self.engine, sampler.thinking) if self.engine is not None else None
        if warning:
            self.notify(warning, title="Thinking on for this chat", severity="warning", markup=False)
        else:
            self.notify(f"Thinking {'on' if sampler.thinking else 'off'} for this chat")

    def edit_settings(self) -> None:
        noise = self.engine.backend.noise if self.engine is not None else None
        self.app.push_screen(SettingsScreen(self.chat_settings, noise), self._apply_settings)

    @recoverable
    def _apply_settings(self, choice: SettingsChoice | None) -> None:
        if choice is None:
            return
        self.chat_settings = choice.settings
        self._save_chat_settings()
        if choice.as_default:
            sections, held = defaults_to_save(choice.settings, self.settings, load_settings(environ={}))
            path = save_defaults(sections)
            self.settings.sampler = copy.deepcopy(choice.settings.sampler)
            self.settings.system_prompt = choice.settings.system_prompt
            self.notify(f"Settings saved for this chat and as the default of new chats ({path})"
                        + (f"; not {', '.join(held)}: set for this run only, by a flag or the environment"
                           if held else ""), markup=False)
        else:
            self.notify("Settings saved for this chat")
