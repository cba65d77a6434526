"""The palette's Screenshot command: an SVG of the screen saved in the data dir's screenshots/.

Textual's own command delivers to the Downloads folder, which many machines (servers, containers)
do not have: the command then only says "Failed to save screenshot"."""

from __future__ import annotations

from pathlib import Path

from textual.app import App, SystemCommand

from dg_chat import paths

TITLE = "Screenshot"


def screenshot_dir() -> Path:
    return paths.data_dir() / "screenshots"


def take_screenshot(app: App) -> None:
    folder = screenshot_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        saved = app.save_screenshot(path=str(folder))
    except OSError as exc:
        app.notify(f"Screenshot failed: {exc}", title=TITLE, severity="error", markup=False)
    else:
        app.notify(f"Saved screenshot to {saved}", title=TITLE, markup=False)


def screenshot_command(app: App) -> SystemCommand:
    # After a moment: the palette is closed by then and not in the picture.
    return SystemCommand(TITLE, f"Save an SVG of the screen in {screenshot_dir()}",
                         lambda: app.set_timer(0.1, lambda: take_screenshot(app)))
