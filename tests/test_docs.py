"""What the docs promise about what ships, and that their links lead somewhere.

The production image and the wheel carry the bot only (README, "What the image contains"):
nothing here builds them, it reads what `pip install .` and the Dockerfile are given.
docs/architecture.md is the newcomer's map: every file it links to exists, and it names every
handler module and every locale file, so that a new one cannot be left off the map.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from setuptools import find_namespace_packages, find_packages

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
OFFLINE_PACKAGES = ("emulator", "offline")
# Never in the bot's runtime dependencies: test, lint and browser tools, and the offline tools.
NOT_AT_RUN_TIME = ("pytest", "playwright", "hypothesis", "ruff", "mypy", "import-linter")
OFFLINE_DISTRIBUTION = "capacity-bot-tools"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _is_offline(package: str) -> bool:
    return package.split(".")[0] in OFFLINE_PACKAGES


def _not_at_run_time(name: str) -> bool:
    name = canonicalize_name(name)
    return name == OFFLINE_DISTRIBUTION or any(
        name == tool or name.startswith(f"{tool}-") for tool in NOT_AT_RUN_TIME
    )


def test_the_wheel_of_the_bot_carries_no_offline_tool():
    setuptools = _pyproject()["tool"]["setuptools"]
    find = setuptools["packages"]["find"]
    finder = find_namespace_packages if find.get("namespaces", True) else find_packages
    packages = finder(
        where=str(ROOT / find.get("where", ["."])[0]),
        include=find.get("include", ("*",)),
        exclude=find.get("exclude", ()),
    )
    assert {"bot.runtime", "handlers", "storage", "locales"} <= set(packages)
    assert not [p for p in packages if _is_offline(p) or p.split(".")[0] in ("tools", "tests")]
    # Nor a pattern or package data that would take them in if they moved back to the top.
    for pattern in find.get("include", ()):
        assert not any(fnmatch.fnmatch(name, pattern) for name in OFFLINE_PACKAGES), pattern
    assert not [key for key in setuptools.get("package-data", {}) if _is_offline(key)]


def test_no_runtime_dependency_is_a_test_browser_or_offline_tool():
    names = [Requirement(line).name for line in _pyproject()["project"]["dependencies"]]
    assert "matplotlib" in names  # the charts of /stats
    assert not [name for name in names if _not_at_run_time(name)]


def test_the_image_copies_the_bot_alone_and_installs_no_extra():
    lines = [
        line
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = "\n".join(lines).replace("\\\n", " ")  # continuation lines
    instructions = [line.split(maxsplit=1) for line in joined.splitlines() if line.strip()]
    copied = {
        Path(source).parts[0]
        for keyword, rest in instructions
        if keyword == "COPY"
        for source in rest.split()[:-1]
    }
    assert copied == {"pyproject.toml", "README.md", "bot", "handlers", "storage", "locales"}
    installs = [
        rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest
    ]
    assert installs and all(re.search(r"pip install \.(\s|$)", rest) for rest in installs)


def _image_packages() -> dict[str, str]:
    section = README.read_text().split("### What the image contains", 1)[1].split("\n#", 1)[0]
    [block] = re.findall(r"```text\n(.*?)```", section, flags=re.DOTALL)
    pinned = [line.split("==") for line in block.splitlines()]
    assert all(len(pin) == 2 and pin[1] for pin in pinned), block
    return {canonicalize_name(name): version for name, version in pinned}


def test_the_readme_lists_the_image_s_packages_and_nothing_offline():
    listed = _image_packages()
    assert "capacity-bot" in listed and "matplotlib" in listed
    for line in _pyproject()["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            assert canonicalize_name(requirement.name) in listed, requirement.name
    assert not [name for name in listed if _not_at_run_time(name)]


def _links(markdown: Path) -> list[str]:
    """The targets of the Markdown links of a file, code spans and blocks left out."""
    text = re.sub(r"```.*?```", "", markdown.read_text(), flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def _anchors(markdown: Path) -> set[str]:
    """GitHub's anchors of a file's headings: lower case, punctuation dropped, - for spaces."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", markdown.read_text(), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


@pytest.mark.parametrize("markdown", [README, ARCHITECTURE], ids=lambda path: path.name)
def test_every_link_of_the_docs_leads_to_a_file_and_heading_that_exist(markdown: Path):
    for link in _links(markdown):
        if re.match(r"^[a-z]+:", link):
            continue  # an address on the web
        target, _, anchor = link.partition("#")
        path = (markdown.parent / target).resolve() if target else markdown
        assert path.exists(), f"{markdown.name}: {link} leads nowhere"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{markdown.name}: no heading for {link}"


def test_the_architecture_page_names_every_handler_module_and_locale_file():
    """The table "Where each feature lives": a new handler or locale file belongs on it."""
    page = ARCHITECTURE.read_text()
    handlers = [
        path.name
        for path in sorted((ROOT / "handlers").rglob("*.py"))
        if path.name != "__init__.py"
    ]
    locales = [path.name for path in sorted((ROOT / "locales" / "fr").glob("*.yaml"))]
    missing = [name for name in handlers + locales if name not in page]
    assert not missing, f"docs/architecture.md does not say where these belong: {missing}"
