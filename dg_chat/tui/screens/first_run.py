"""The first-run screen: start the embedded demo model now, or download DiffusionGemma first.

`first_run_needed(settings)` says whether to show it: no model configured and no earlier
choice. The choice is recorded by `hub.record_choice` (in the data dir, never in the user's
config), and from then on it is what an empty `model` setting means. The screen dismisses with
the model spec to run ("demo" or "diffusiongemma:QUANT").
"""

from __future__ import annotations

import threading

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, ProgressBar, Static

from dg_chat import hub
from dg_chat.config import Settings
from dg_chat.errors import DgChatError

DOWNLOAD_MODEL = "diffusiongemma"
ESTIMATE_BITS_PER_SECOND = 100e6
"""Link speed the download-time estimate assumes, before the real speed is known."""


def first_run_needed(settings: Settings) -> bool:
    return not settings.model and hub.recorded_choice() is None


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{max(minutes, 1)} min"


class FirstRunScreen(ModalScreen[str]):
    """Demo now (the default: Enter) or download DiffusionGemma with live progress. Modal: the
    app's keys (F2, Ctrl+S, ...) would act on the chat behind it, which has no model yet."""

    DEFAULT_CSS = """
    FirstRunScreen { align: center middle; overflow-y: auto; background: $background; }
    #first-run { width: 100%; max-width: 84; height: auto; border: round $accent; padding: 0 1; }
    #first-run > Static { margin-bottom: 1; }
    #first-run Button { width: 100%; }
    #title { text-style: bold; }
    #progress { display: none; }
    #progress.running { display: block; }
    #status { margin-bottom: 0; }
    #status.error { color: $error; }
    #offer.no-gpu { color: $warning; }
    """
    AUTO_FOCUS = "#demo"
    BINDINGS = [Binding("escape", "cancel_download", "Cancel download")]

    class Offer(Message):
        """The quant chosen for this machine, from a worker; `gpu`: it has a CUDA GPU to run it."""

        def __init__(self, quant: str, size: int, reason: str, gpu: bool) -> None:
            super().__init__()
            self.quant, self.size, self.reason, self.gpu = quant, size, reason, gpu

    class Progress(Message):
        """Download progress from the worker thread; a newer one replaces a queued older one."""

        def __init__(self, progress: hub.DownloadProgress) -> None:
            super().__init__()
            self.progress = progress

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, FirstRunScreen.Progress)

    class Done(Message):
        def __init__(self, spec: str | None, error: str | None = None) -> None:
            super().__init__()
            self.spec, self.error = spec, error

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self._cancel = threading.Event()
        self._spec: str | None = None
        self._received = False
        """Whether a download has written any bytes (a retry then resumes it)."""

    def compose(self) -> ComposeResult:
        demo = hub.demo_file()
        model = hub.load_catalog()[DOWNLOAD_MODEL]
        with Vertical(id="first-run"):
            yield Static("Welcome to dg-chat", id="title")
            yield Static("No model is set up yet. How do you want to start?")
            yield Button("Start the demo model now", id="demo", variant="primary", disabled=not demo.is_file())
            yield Static("A tiny model shipped with dg-chat, its own guide: ask it how to use dg-chat or what a "
                         "canvas is. It runs anywhere, in seconds."
                         if demo.is_file() else f"The demo model is missing from this installation ({demo}).",
                         id="demo-note", markup=False)
            yield Button(f"Download {model.title}", id="download", disabled=True)
            yield Static("Checking free memory to choose a quantization…", id="offer", markup=False)
            yield ProgressBar(id="progress", show_eta=False)
            yield Static("", id="status", markup=False)

    def on_mount(self) -> None:
        if not hub.demo_file().is_file():
            self.query_one("#download", Button).focus()
        self.run_worker(self._estimate, thread=True, group="estimate")

    def on_unmount(self) -> None:
        self._cancel.set()

    def _estimate(self) -> None:
        """The quant to offer, as `doctor` sees this machine: without a CUDA GPU the model cannot
        run usably, whatever the free RAM, so only the smallest download is offered, as such."""
        model = hub.load_catalog()[DOWNLOAD_MODEL]
        sizes = model.downloadable()
        memory = hub.free_memory(self.settings.device)
        if memory.kind == "VRAM":
            quant, reason = hub.choose_quant(sizes, model.headroom, memory)
            self.post_message(self.Offer(quant, sizes[quant], f"Chosen {reason}.", gpu=True))
        else:
            quant = min(sizes, key=sizes.__getitem__)
            self.post_message(self.Offer(quant, sizes[quant], f"No CUDA GPU here: {hub.GPU_NEEDED} "
                                         "(see dg-chat doctor). A download is only useful for another machine.",
                                         gpu=False))

    @on(Offer)
    def _show_offer(self, offer: Offer) -> None:
        self._spec = f"{DOWNLOAD_MODEL}:{offer.quant}"
        minutes = _duration(offer.size * 8 / ESTIMATE_BITS_PER_SECOND)
        offer_text = self.query_one("#offer", Static)
        offer_text.set_class(not offer.gpu, "no-gpu")
        offer_text.update(f"{offer.reason} About {minutes} at {ESTIMATE_BITS_PER_SECOND / 1e6:.0f} Mbit/s; "
                          "an interrupted download resumes.")
        download = self.query_one("#download", Button)
        anyway = "" if offer.gpu else " anyway"
        download.label = (f"Download {hub.load_catalog()[DOWNLOAD_MODEL].title}{anyway} "
                          f"({offer.quant}, {hub.gb(offer.size)})")
        download.disabled = False

    @on(Button.Pressed, "#demo")
    def _start_demo(self) -> None:
        hub.record_choice(hub.DEMO)
        self.dismiss(hub.DEMO)

    @on(Button.Pressed, "#download")
    def _start_download(self) -> None:
        if self._spec is None:
            return
        self._cancel.clear()
        for button in self.query(Button):
            button.disabled = True
        self.query_one("#progress", ProgressBar).add_class("running")
        status = self.query_one("#status", Static)
        status.remove_class("error")
        status.update("Connecting to the Hugging Face Hub… (Esc cancels)")
        self.run_worker(lambda: self._download(self._spec), thread=True, exclusive=True, group="download")

    def _download(self, spec: str) -> None:
        def report(progress: hub.DownloadProgress) -> None:
            if self._cancel.is_set():
                raise hub.DownloadCancelled("download cancelled; it resumes where it stopped next time")
            self.post_message(self.Progress(progress))

        try:
            hub.pull(spec, self.settings, report)
        except DgChatError as exc:
            self.post_message(self.Done(None, str(exc)))
        else:
            self.post_message(self.Done(spec))

    @on(Progress)
    def _show_progress(self, message: Progress) -> None:
        p = message.progress
        self._received |= p.phase == "download" and p.done > 0
        self.query_one("#progress", ProgressBar).update(total=p.total, progress=p.done)
        verb = "Verifying" if p.phase == "verify" else "Downloading"
        left = f", {_duration(p.eta)} left" if p.eta is not None else ""
        self.query_one("#status", Static).update(
            f"{verb} {p.filename}: {hub.gb(p.done)} of {hub.gb(p.total)}, {p.speed / 1e6:.1f} MB/s{left} (Esc cancels)")

    @on(Done)
    def _finish(self, message: Done) -> None:
        if message.spec is not None:
            hub.record_choice(message.spec)
            self.dismiss(message.spec)
            return
        self.query_one("#progress", ProgressBar).remove_class("running")  # hidden: it stops
        status = self.query_one("#status", Static)
        status.add_class("error")
        status.update(message.error or "download failed")
        self.call_after_refresh(status.scroll_visible, animate=False)  # once laid out with the error
        self.query_one("#demo", Button).disabled = not hub.demo_file().is_file()
        download = self.query_one("#download", Button)
        download.disabled = False
        download.label = "Resume the download" if self._received else "Try again"

    def action_cancel_download(self) -> None:
        self._cancel.set()
