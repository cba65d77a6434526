"""The first-run screen on its own, in a tiny host app driven by Pilot."""

from __future__ import annotations

import threading

import pytest
from textual.app import App
from textual.widgets import Button, ProgressBar, Static

from dg_chat import hub, paths
from dg_chat.config import Settings
from dg_chat.hub import record_choice, recorded_choice
from dg_chat.tui.screens.first_run import FirstRunScreen, first_run_needed
from tests.support.fake_hub import FakeHub, FakeRepo, point_hub_at, tiny_gguf, write_catalog

REPO = "test-org/tiny-GGUF"


class Host(App[str]):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    def on_mount(self) -> None:
        self.push_screen(FirstRunScreen(self.settings), self.exit)


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    # the catalog's "diffusiongemma" is a tiny model served by the fake Hub
    write_catalog(tmp_path / "models", REPO, name="diffusiongemma")
    monkeypatch.setattr(paths, "repo_models_dir", lambda: tmp_path / "models")
    monkeypatch.setattr(hub, "free_memory", lambda device: hub.Memory(int(1.5e6), "VRAM"))
    return tmp_path / "models"


async def wait_for(pilot, condition, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not reached")


def test_first_run_is_needed_until_a_choice_is_recorded():
    assert first_run_needed(Settings())
    assert not first_run_needed(Settings(model="dream:Q4_K_M"))
    record_choice("demo")
    assert recorded_choice() == "demo" and not first_run_needed(Settings())
    assert not (paths.config_file()).exists()  # never written to the user's config


async def test_enter_starts_the_demo(models_dir):
    tiny_gguf(models_dir / "demo.gguf", n_floats=256)
    app = Host(Settings())
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.focused.id == "demo"
        await pilot.press("enter")
    assert app.return_value == "demo" and recorded_choice() == "demo"


async def test_download_with_live_progress_then_chat(models_dir, tmp_path, monkeypatch):
    updates: list[float] = []
    real_update = ProgressBar.update

    def spy(self, **kwargs):
        updates.append(kwargs.get("progress"))
        return real_update(self, **kwargs)

    monkeypatch.setattr(ProgressBar, "update", spy)
    data = tiny_gguf(tmp_path / "q4.gguf", n_floats=256 * 1024)
    app = Host(Settings())
    with FakeHub() as server:
        server.repos[REPO] = FakeRepo({"tiny-Q4_K_M.gguf": data})
        point_hub_at(monkeypatch, server.url, tmp_path / "hf-cache")
        async with app.run_test() as pilot:
            screen = app.screen
            assert isinstance(screen, FirstRunScreen)
            assert screen.query_one("#demo", Button).disabled  # no demo model in this models dir
            await wait_for(pilot, lambda: not screen.query_one("#download", Button).disabled)
            offer = str(screen.query_one("#offer", Static).render())
            assert "Chosen Q4_K_M: 1.0 MB fits 1.5 MB free VRAM" in offer and "Mbit/s" in offer
            assert "(Q4_K_M, 1.0 MB)" in str(screen.query_one("#download", Button).label)
            await pilot.click("#download")
            await wait_for(pilot, lambda: app.return_value is not None)
    assert app.return_value == "diffusiongemma:Q4_K_M" and recorded_choice() == "diffusiongemma:Q4_K_M"
    assert hub.resolve_model("diffusiongemma:Q4_K_M", Settings()).read_bytes() == data
    assert len(updates) >= 2 and updates[-1] == len(data)


async def test_a_failed_download_shows_one_line_and_can_be_retried(models_dir, tmp_path, monkeypatch):
    tiny_gguf(models_dir / "demo.gguf", n_floats=256)
    app = Host(Settings())
    with FakeHub() as server:  # serves no repository: 404
        point_hub_at(monkeypatch, server.url, tmp_path / "hf-cache")
        async with app.run_test() as pilot:
            screen = app.screen
            await wait_for(pilot, lambda: not screen.query_one("#download", Button).disabled)
            await pilot.click("#download")
            status = screen.query_one("#status", Static)
            await wait_for(pilot, lambda: status.has_class("error"))
            assert "test-org/tiny-GGUF: repository not found on the Hub" in str(status.render())
            assert str(screen.query_one("#download", Button).label) == "Try again"  # nothing to resume
            assert not screen.query_one("#demo", Button).disabled
            assert app.screen is screen  # still choosing
            await pilot.click("#demo")
    assert app.return_value == "demo"


async def test_escape_cancels_a_running_download(models_dir, monkeypatch):
    tiny_gguf(models_dir / "demo.gguf", n_floats=256)
    started = threading.Event()

    def endless_pull(spec, settings, progress):
        started.set()
        done = 0
        while True:  # until the screen's progress callback raises DownloadCancelled
            done += 1000
            progress(hub.DownloadProgress("f.gguf", "download", done, 10**9, 1e6))
            threading.Event().wait(0.01)

    monkeypatch.setattr(hub, "pull", endless_pull)
    app = Host(Settings())
    async with app.run_test() as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: not screen.query_one("#download", Button).disabled)
        await pilot.click("#download")
        await wait_for(pilot, started.is_set)
        status = screen.query_one("#status", Static)
        await wait_for(pilot, lambda: "MB/s" in str(status.render()))
        await pilot.press("escape")
        await wait_for(pilot, lambda: status.has_class("error"))
        assert "download cancelled; it resumes" in str(status.render())
        assert str(screen.query_one("#download", Button).label) == "Resume the download"


async def test_without_a_gpu_the_download_is_not_offered_as_fitting_in_ram(models_dir, monkeypatch):
    from dg_chat.commands.doctor import check_torch

    tiny_gguf(models_dir / "demo.gguf", n_floats=256)
    monkeypatch.setattr(hub, "free_memory", lambda device: hub.Memory(int(23e9), "RAM"))
    app = Host(Settings())
    async with app.run_test() as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: not screen.query_one("#download", Button).disabled)
        offer = str(screen.query_one("#offer", Static).render())
        assert "fits" not in offer and "No CUDA GPU here" in offer and hub.GPU_NEEDED in offer
        assert "anyway" in str(screen.query_one("#download", Button).label)
        assert app.focused.id == "demo"  # Enter still starts what runs here
    if not any(check.name.startswith("gpu ") for check in check_torch()):  # what doctor says here
        assert check_torch()[-1].hint == hub.GPU_NEEDED


async def test_offline_the_progress_stops_and_the_whole_error_is_readable(models_dir, monkeypatch):
    tiny_gguf(models_dir / "demo.gguf", n_floats=256)
    error = ("cannot reach https://huggingface.co for unsloth/diffusiongemma-26B-A4B-it-GGUF (ConnectError: "
             "[Errno -2] Name or service not known); check the network and run the pull again, it resumes")

    def offline_pull(spec, settings, progress):
        raise hub.DgChatError(error)

    monkeypatch.setattr(hub, "pull", offline_pull)
    app = Host(Settings())
    async with app.run_test(size=(50, 16)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: not screen.query_one("#download", Button).disabled)
        screen.query_one("#download", Button).press()
        status = screen.query_one("#status", Static)
        await wait_for(pilot, lambda: status.has_class("error"))
        await pilot.pause()
        assert not screen.query_one("#progress", ProgressBar).display
        assert " ".join(str(status.render()).split()) == error
        assert screen.region.contains_region(status.region)  # scrolled into view, not cut
