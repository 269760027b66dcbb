"""`make run` installs what the bot needs, `make test` adds the test extra: what each target
would install, read from `make -n` in a copy of the Makefile (nothing is installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
RUN_ONLY = "pip install --quiet -e . -e ./tools"
WITH_TESTS = 'pip install --quiet -e ".[test]" -e ./tools'

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    for name in ("Makefile", "pyproject.toml", "tools/pyproject.toml"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def _made(clone: Path, *files: str) -> None:
    """As if these files had been made after the last change to pyproject.toml."""
    later = (clone / "pyproject.toml").stat().st_mtime + 60
    for name in files:
        path = clone / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.utime(path, (later, later))


def _installs(clone: Path, target: str) -> list[str]:
    """The project installs `make TARGET` would run, in order."""
    env = {k: v for k, v in os.environ.items() if k not in ("BOT_TOKEN", "MAKEFLAGS")}
    dry = subprocess.run(
        ["make", "-n", target], cwd=clone, env=env, capture_output=True, text=True, check=True
    )
    return [
        install
        for line in dry.stdout.splitlines()
        for install in (RUN_ONLY, WITH_TESTS)
        if line.endswith(install)
    ]


def test_on_a_fresh_clone_run_installs_the_bot_only_and_test_adds_the_extra(clone: Path):
    assert _installs(clone, "run") == [RUN_ONLY]
    assert _installs(clone, "test") == [RUN_ONLY, WITH_TESTS]  # .ci/run's `make test`


def test_test_after_run_installs_only_the_test_extra(clone: Path):
    _made(clone, ".venv/bin/python", ".venv/.installed-run")  # `make run` was done
    assert _installs(clone, "test") == [WITH_TESTS]
    assert _installs(clone, "lint") == [WITH_TESTS]
    assert _installs(clone, "run") == []


def test_run_after_test_installs_nothing_more(clone: Path):
    _made(clone, ".venv/bin/python", ".venv/.installed-run", ".venv/.installed-test")
    for target in ("run", "demo", "playground", "migrate", "bench-quick", "test"):
        assert _installs(clone, target) == [], target


def test_a_changed_pyproject_is_installed_again_by_either(clone: Path):
    _made(clone, ".venv/bin/python", ".venv/.installed-run", ".venv/.installed-test")
    later = (clone / ".venv/.installed-test").stat().st_mtime + 60
    os.utime(clone / "pyproject.toml", (later, later))  # edited since
    assert _installs(clone, "run") == [RUN_ONLY]
    assert _installs(clone, "test") == [RUN_ONLY, WITH_TESTS]
