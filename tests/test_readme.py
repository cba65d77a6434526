"""The README's two set-up commands are the contract with users and with CI."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", setup)


def test_readme_has_exactly_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("dg-chat") and "pytest" in commands[1]


def test_the_test_command_lints_and_type_checks_before_the_tests():
    steps = readme_commands()[1].split(" && ")
    assert steps[0] == "scripts/setup.sh --dev" and steps[-1] == ".venv/bin/python -m pytest"
    assert ".venv/bin/ruff check ." in steps[1:-1] and ".venv/bin/mypy" in steps[1:-1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci.splitlines()


def readme_key_rows() -> list[tuple[list[str], list[str]]]:
    """(keys, ids) of each row of the README's key table: `A / B, C` keys, one group per id."""
    text = (ROOT / "README.md").read_text()
    table = text.split("| key | binding id | |\n|---|---|---|\n", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines():
        keys, ids = line.split(" | ")[:2]
        keys = re.sub(r" (in|on) [a-z ]+$", "", keys.removeprefix("| ").replace(" in the model picker", ""))
        rows.append(([key.strip() for key in keys.split(" / ")], re.findall(r"`([^`]+)`", ids)))
    return rows


def test_the_readme_key_table_matches_the_bindings():
    from dg_chat.tui.bindings import key_bindings
    from dg_chat.tui.screens.help import key_label

    keys_of = {binding.id: key_label(binding.key) for binding in key_bindings()}
    rows = readme_key_rows()
    listed = [binding_id for _, ids in rows for binding_id in ids]
    assert sorted(listed) == sorted(keys_of)  # every binding once, no binding that does not exist
    for keys, ids in rows:
        assert keys == [keys_of[binding_id] for binding_id in ids], ids
