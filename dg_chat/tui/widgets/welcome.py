"""What an empty chat shows: the model loaded, what it runs on, and three prompts to start with
(for the embedded demo model, questions its guide knows)."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from dg_chat import hub
from dg_chat.engine.model_info import ModelInfo
from dg_chat.text.sanitize import visible

EXAMPLE_PROMPTS = (
    "Explain how a diffusion language model writes an answer.",
    "Write a haiku about the sea.",
    "Give me three ideas for a weekend project in Python.",
)
DEMO_PROMPTS = (  # questions of models/demo-guide
    "What is a canvas?",
    "How do I stop an answer?",
    "Which quant fits an RTX 4090?",
)


def example_prompts(model: ModelInfo | None) -> tuple[str, ...]:
    is_demo = model is not None and Path(model.file) == hub.demo_file()
    return DEMO_PROMPTS if is_demo else EXAMPLE_PROMPTS


def model_line(model: ModelInfo | None, error: str = "") -> str:
    if model is not None:
        return f"Model: {model.label()}"
    return f"No model loaded: {error}" if error else "Loading the model…"


class Welcome(Vertical):
    """Shown in the transcript of a chat without messages."""

    def __init__(self, model: ModelInfo | None, error: str = "") -> None:
        super().__init__(id="welcome")
        self.model = model
        self.error = error

    def compose(self) -> ComposeResult:
        yield Static("dg-chat · answers are drafted as whole blocks and denoised live", classes="welcome-title")
        yield Static(visible(model_line(self.model, self.error)), id="welcome-model", markup=False)
        yield Static("Try:", classes="hint")
        for prompt in example_prompts(self.model):
            yield Static(f"  › {prompt}", classes="welcome-example", markup=False)
        yield Static("F2: choose a model · F1: keys · Ctrl+P: commands", classes="hint")

    def show_model(self, model: ModelInfo | None, error: str = "") -> None:
        self.model, self.error = model, error
        self.query_one("#welcome-model", Static).update(visible(model_line(model, error)))
        for line, prompt in zip(self.query(".welcome-example").results(Static), example_prompts(model), strict=True):
            line.update(f"  › {prompt}")
