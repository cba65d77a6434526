import subprocess
import sys

import pytest

from dg_chat.cli import main


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dg_chat.cli", *argv], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("argv", [[], ["ask"], ["models"], ["models", "pull"], ["models", "info"], ["doctor"]])
def test_help_everywhere(argv):
    result = run_cli(*argv, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: dg-chat")


def test_bad_config_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[sampler]\nmax_steps = -3\n")
    monkeypatch.setenv("DG_CHAT_CONFIG", str(config))
    assert main(["doctor"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "max_steps" in err
