"""The catalog, model specs, local resolution and quant choice (no network involved)."""

from __future__ import annotations

import pytest

from dg_chat import hub, paths
from dg_chat.config import Settings
from dg_chat.engine.backends.choice import choose_backend
from dg_chat.errors import DgChatError
from tests.support.fake_hub import tiny_gguf, write_catalog

GiB = 1024**3


def test_the_shipped_catalog_is_complete():
    catalog = hub.load_catalog()
    assert list(catalog) == ["diffusiongemma", "dream", "llada", "llada-moe", "rnd1"]
    dg = catalog["diffusiongemma"]
    assert dg.repo == "unsloth/diffusiongemma-26B-A4B-it-GGUF"
    assert list(dg.quants) == ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "BF16"]
    assert choose_backend(dg.architecture) == "torch"
    for model in catalog.values():
        assert "{quant}" in model.files and model.headroom > 0
        if model.name != "diffusiongemma":
            assert choose_backend(model.architecture) == "llama"
    assert hub.demo_file() == paths.repo_models_dir() / "demo.gguf"


@pytest.mark.parametrize(("filename", "quant"), [
    ("diffusiongemma-26B-A4B-it-Q4_K_M.gguf", "Q4_K_M"),
    ("diffusiongemma-26B-A4B-it-UD-Q4_K_M.gguf", "Q4_K_M"),
    ("BF16/diffusiongemma-26B-A4B-it-BF16-00001-of-00002.gguf", "BF16"),
    ("diffusiongemma-26B-A4B-it-q8_0.gguf", "Q8_0"),
    ("diffusiongemma-26B-A4B-it-Q4_K_S.gguf", None),
    ("README.md", None),
])
def test_quant_globs_match_published_names(filename, quant):
    assert hub.load_catalog()["diffusiongemma"].quant_of(filename) == quant


def test_mradermacher_style_names():
    assert hub.load_catalog()["llada"].quant_of("LLaDA-8B-Instruct.Q4_K_M.gguf") == "Q4_K_M"
    assert hub.load_catalog()["rnd1"].quant_of("rnd1-base-0910-q8_0.gguf") == "Q8_0"


@pytest.mark.parametrize(("spec", "message"), [
    ("gemma", "unknown model 'gemma'; known: demo, diffusiongemma"),
    ("diffusiongemma:Q3_K", "diffusiongemma has no quant 'Q3_K'; choose one of Q4_K_M, Q5_K_M"),
])
def test_bad_specs_are_one_clear_line(spec, message):
    with pytest.raises(DgChatError, match=message):
        hub.resolve_model(spec, Settings())


def test_specs_ignore_case():
    model, quant = hub.parse_spec("DiffusionGemma:q5_k_m")
    assert (model.name, quant) == ("diffusiongemma", "Q5_K_M")


def test_not_downloaded_says_how_to_pull():
    with pytest.raises(DgChatError, match=r"^diffusiongemma:Q5_K_M is not downloaded; run: "
                                          r"dg-chat models pull diffusiongemma:Q5_K_M$"):
        hub.resolve_model("diffusiongemma:Q5_K_M", Settings())
    with pytest.raises(DgChatError, match="run: dg-chat models pull diffusiongemma$"):
        hub.resolve_model("diffusiongemma", Settings())


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    write_catalog(tmp_path / "models", "test-org/tiny-GGUF")
    monkeypatch.setattr(paths, "repo_models_dir", lambda: tmp_path / "models")
    return tmp_path / "models"


def test_the_demo_is_the_default(models_dir):
    with pytest.raises(DgChatError, match="the embedded demo model is missing .*demo.gguf.*; reinstall"):
        hub.resolve_model("", Settings())
    tiny_gguf(models_dir / "demo.gguf", n_floats=256)
    assert hub.resolve_model("", Settings()) == models_dir / "demo.gguf"
    assert hub.resolve_model("demo", Settings()) == models_dir / "demo.gguf"
    assert hub.resolve_model("DEMO", Settings()) == models_dir / "demo.gguf"  # as catalog names, any case
    assert [m.spec for m in hub.local_models(Settings())] == ["demo"]


def test_paths_resolve_as_themselves(tmp_path, models_dir):
    model = tmp_path / "my model.gguf"
    tiny_gguf(model, n_floats=256)
    assert hub.resolve_model(str(model), Settings()) == model
    with pytest.raises(DgChatError, match="no such model file: .*missing.gguf"):
        hub.resolve_model(str(tmp_path / "missing.gguf"), Settings())
    split_name = tmp_path / "big-Q8_0-00001-of-00001.gguf"  # split or not: decided from its metadata on opening
    split_name.write_bytes(b"GGUF")
    assert hub.resolve_model(str(split_name), Settings()) == split_name


def test_pull_refuses_the_demo_and_paths(models_dir):
    with pytest.raises(DgChatError, match="ships with dg-chat"):
        hub.plan_pull("demo", Settings())
    with pytest.raises(DgChatError, match="is a file path"):
        hub.plan_pull("./x.gguf", Settings())


@pytest.mark.parametrize(("free_gib", "quant"), [
    (23.5, "Q5_K_M"),  # RTX 4090, nothing else on it
    (22.0, "Q5_K_M"),  # RTX 4090 that also drives a desktop
    (31.0, "Q8_0"),    # RTX 5090
    (79.0, "Q8_0"),    # H100: BF16 (50.5 GB) is over the single-file limit, so never offered
    (16.0, "Q4_K_M"),  # too small for any: the smallest, with a warning
])
def test_quant_choice_for_diffusiongemma(free_gib, quant):
    dg = hub.load_catalog()["diffusiongemma"]
    chosen, reason = hub.choose_quant(dg.downloadable(), dg.headroom, hub.Memory(int(free_gib * GiB), "VRAM"))
    assert chosen == quant
    assert reason.startswith(f"{quant}: ")
    assert ("fits" in reason) == (free_gib > 16)


def test_quant_choice_reason_reads_well():
    sizes = {"Q4_K_M": 16 * 10**9, "Q5_K_M": 18 * 10**9, "Q6_K": 21 * 10**9}
    quant, reason = hub.choose_quant(sizes, 2 * 10**9, hub.Memory(int(22.3e9), "VRAM"))
    assert (quant, reason) == ("Q5_K_M", "Q5_K_M: 18.0 GB fits 22.3 GB free VRAM with 2.0 GB headroom")
    quant, reason = hub.choose_quant(sizes, 2 * 10**9, hub.Memory(int(8e9), "RAM"))
    assert quant == "Q4_K_M" and "more than the 8.0 GB free RAM" in reason


def test_free_memory_on_cpu_is_available_ram():
    memory = hub.free_memory("cpu")
    assert memory.kind == "RAM" and memory.free > 0


def test_download_progress_eta():
    p = hub.DownloadProgress("f", "download", done=25, total=125, speed=10.0)
    assert p.eta == 10.0
    assert hub.DownloadProgress("f", "download", 0, 125, 0.0).eta is None


def test_hub_module_does_not_import_textual():
    import subprocess
    import sys

    code = "import sys, dg_chat.hub; assert 'textual' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_sizes_under_a_gigabyte_are_shown_in_megabytes():
    from dg_chat import hub as hub_module

    demo = hub_module.demo_file()  # the shipped demo, 16.8 MB: never "0.0 GB"
    assert hub_module.gb(demo.stat().st_size) == f"{demo.stat().st_size / 1e6:.1f} MB" != "0.0 MB"
    assert hub_module.gb(19.3e9) == "19.3 GB" and hub_module.gb(1e9) == "1.0 GB"
