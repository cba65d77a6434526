import os
import shlex
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


def test_python_dash_m_dg_chat_is_the_command():
    result = subprocess.run([sys.executable, "-m", "dg_chat", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("usage: dg-chat")


def test_bad_config_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[sampler]\nmax_steps = -3\n")
    monkeypatch.setenv("DG_CHAT_CONFIG", str(config))
    assert main(["models", "list"]) == 1  # (doctor shows it among its checks instead)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "max_steps" in err


def test_continue_is_refused_where_it_would_do_nothing(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--continue", "ask", "a follow-up"])
    assert exit_.value.code == 2
    assert "--continue reopens the last chat in the app; it does nothing for 'ask'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["ask", "--demo", "-m", "llada.gguf", "hi"],
                                  ["-m", "llada.gguf", "ask", "--demo", "hi"]])
def test_demo_and_another_model_are_refused_not_one_silently_dropped(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "--demo and --model llada.gguf name two models; give one of them" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--kernels", "reference", "ask", "hi"], ["ask", "--kernels", "reference", "hi"]])
def test_kernels_flag_before_or_after_ask(argv):
    from dg_chat.cli import build_parser, settings_overrides

    assert settings_overrides(build_parser().parse_args(argv))["kernels"] == "reference"


def test_kernels_flag_is_optional_and_checked(capsys):
    from dg_chat.cli import build_parser, settings_overrides

    assert settings_overrides(build_parser().parse_args(["ask", "hi"]))["kernels"] is None
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--kernels", "fast"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "argument --kernels: invalid choice: 'fast'" in err
    assert all(choice in err for choice in ("auto", "triton", "reference"))


def test_several_words_to_ask_say_to_quote_them(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ask", "--demo", "why", "blue"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == ('dg-chat: error: unrecognized arguments: blue; quote a '
                                                        'prompt of several words: dg-chat ask "why is the sky blue"')
    with pytest.raises(SystemExit):
        main(["ask", "--demo", "--bogus", "why"])
    assert capsys.readouterr().err.splitlines()[-1] == "dg-chat: error: unrecognized arguments: --bogus"


def test_a_terminal_that_is_not_utf8_gets_question_marks_not_an_internal_error():
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([sys.executable, "-m", "dg_chat.cli", "ask", "--demo", "--seed", "1", "What is a canvas?"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    assert "internal error" not in done.stderr and " ? " in done.stderr  # the stats line's "·"


def test_with_stderr_closed_no_message_lands_in_the_answer():
    command = f"{shlex.quote(sys.executable)} -m dg_chat.cli ask --demo --think --seed 1 'What is a canvas?' 2>&-"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip()
    assert "dg-chat:" not in done.stdout  # the warning that the demo has no thinking channel went nowhere
