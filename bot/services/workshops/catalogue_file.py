"""Reading a workshop catalogue file: the YAML read safely, every problem of the file listed
at once, one line per problem naming the file, the entry (numbered from 1, as a person counts
them) and the field, in the order of the file.

No database here: `capacity-bot import --dry-run` and the checks of a file written by hand run
without one. What an entry may say is in catalogue_entries.py; applying a checked file to the
database is importer.py.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from bot.services.workshops.catalogue_entries import (
    ENTRY_MODELS,
    KEY_RULE,
    KINDS,
    CatalogueError,
    CatalogueFile,
    did_you_mean,
    problem_line,
)
from bot.settings import SUPPORTED_LANGUAGES

SAMPLE_CATALOGUE = Path(__file__).resolve().parent / "saint-etienne.yaml"

# A year of a city's workshops is well under 1 MB. Reading and checking cost seconds and about
# 50 times the file's size in memory per MB (a 52 MB file took 2.5 GB and nearly two minutes):
# the bound keeps a wrong file from taking the host.
MAX_FILE_MB = 5
_YAML_STR = "tag:yaml.org,2002:str"
_YAML_TIMESTAMP = "tag:yaml.org,2002:timestamp"
# The safe loader's implicit resolvers (by first character), without the timestamp one, and a
# clock time as text checked before the int resolver of the same first character, so that
# 14:00 stays text. Built once; the loaders only read it.
_IMPLICIT_RESOLVERS: dict[str, list[tuple[str, re.Pattern[str]]]] = {
    first: [
        *([(_YAML_STR, re.compile(r"^[0-9]{1,2}:[0-9]{2}$"))] if first.isdigit() else []),
        *(resolver for resolver in resolvers if resolver[0] != _YAML_TIMESTAMP),
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _CatalogueLoader(yaml.CSafeLoader):
    """A safe YAML loader that keeps clock times and dates as text and refuses a field written
    twice.

    YAML 1.1 reads an unquoted 14:00 as the base-60 integer 840, silently keeps the last of two
    identical fields, and turns 2026-02-30 into a Python exception with no line: all three would
    turn an operator's slip into a wrong workshop or a traceback. Dates are read by the models.
    Parsing is libyaml's (shipped in PyYAML's wheels): four times faster than pure Python, and
    it bounds the nesting depth, where the pure-Python parser overflows Python's stack.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # An instance attribute: PyYAML's resolver reads it through self, and its stubs declare
        # it as one (a class-level override would contradict them).
        self.yaml_implicit_resolvers = _IMPLICIT_RESOLVERS

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A value Python cannot hold (an integer of 5,000 digits) is a problem at its line."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            shown = str(node.value)[:20] + ("..." if len(str(node.value)) > 20 else "")
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown!r} ({str(exc).split(';')[0]})", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"field {key_node.value!r} is written twice",
                        key_node.start_mark,
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_Located = tuple[tuple[int, int], str]


def load_catalogue(
    path: Path, *, default_language: str, tz: ZoneInfo, today: dt.date
) -> CatalogueFile:
    """Read and validate a catalogue file (no database); raise CatalogueError with every problem.

    `today` is the local day of import, the origin of `in_days`; times are local to `tz`.
    """
    if default_language not in SUPPORTED_LANGUAGES:
        raise ValueError(f"unsupported default language {default_language!r}")
    source = str(path)
    raw = _read_yaml(path, source)
    if not isinstance(raw, dict):
        found = "it is empty" if raw is None else f"found a {type(raw).__name__}"
        sections = ", ".join(KINDS)
        raise CatalogueError(
            [f"{source}: the file must be a mapping with the sections {sections} ({found})"]
        )
    problems = _duplicate_keys(source, raw)
    catalogue: CatalogueFile | None = None
    try:
        catalogue = CatalogueFile.model_validate(
            raw, context={"default_language": default_language, "tz": tz, "today": today}
        )
    except ValidationError as exc:
        problems += [_describe(source, raw, error) for error in exc.errors()]
    if problems or catalogue is None:
        raise CatalogueError([line for _, line in sorted(problems, key=itemgetter(0))])
    return catalogue


def _read_yaml(path: Path, source: str) -> Any:
    limit = MAX_FILE_MB * 1_000_000
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)  # never more, whatever the file (a device, a pipe)
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise CatalogueError([f"{source}: file not found"]) from None
    except UnicodeDecodeError:
        raise CatalogueError([f"{source}: not a UTF-8 text file"]) from None
    except OSError as exc:
        raise CatalogueError([f"{source}: cannot read the file ({exc.strerror})"]) from None
    if len(data) > limit:
        raise CatalogueError(
            [
                f"{source}: the file is larger than {MAX_FILE_MB} MB, the most a catalogue may "
                "weigh; split it into several files (a file may refer to entries already imported)"
            ]
        )
    try:
        return yaml.load(text, Loader=_CatalogueLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = exc.problem or exc.context or "unreadable"
        raise CatalogueError([f"{source}: {where}invalid YAML: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise CatalogueError([f"{source}: invalid YAML: {exc}"]) from None


def _entry_label(section: str, index: int, entry: Any) -> str:
    key = entry.get("key") if isinstance(entry, Mapping) else None
    label = f"{section}[{index + 1}]"
    return f"{label} (key={key})" if isinstance(key, str) else label


def _rank(section: str, index: int = -1) -> tuple[int, int]:
    return (KINDS.index(section) if section in KINDS else -1, index)


def _duplicate_keys(source: str, raw: Mapping[str, Any]) -> list[_Located]:
    problems: list[_Located] = []
    for section in KINDS:
        entries = raw.get(section)
        if not isinstance(entries, list):
            continue
        first: dict[str, int] = {}
        for index, entry in enumerate(entries):
            key = entry.get("key") if isinstance(entry, Mapping) else None
            if not isinstance(key, str):
                continue
            if key in first:
                message = f"{key!r} is already used by {section}[{first[key] + 1}]"
                label = _entry_label(section, index, entry)
                problems.append(
                    (_rank(section, index), problem_line(source, label, "key", message))
                )
            else:
                first[key] = index
    return problems


def _describe(source: str, raw: Mapping[str, Any], error: ErrorDetails) -> _Located:
    """One pydantic error as a line naming the file, the entry and the field."""
    loc = error["loc"]
    section = str(loc[0]) if loc else ""
    if len(loc) >= 2 and isinstance(loc[1], int):
        entries = raw.get(section)
        entry = entries[loc[1]] if isinstance(entries, list) else None
        label = _entry_label(section, loc[1], entry)
        field_path = ".".join(str(part) for part in loc[2:])
        allowed: Sequence[str] = list(ENTRY_MODELS[section].model_fields)
        rank = _rank(section, loc[1])
    else:
        label, field_path, allowed, rank = None, section, KINDS, _rank(section)
    message = _message(error, field_path.rsplit(".", 1)[-1], allowed)
    return rank, problem_line(source, label, field_path, message)


def _message(error: ErrorDetails, name: str, allowed: Sequence[str]) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    match kind:
        case "missing":
            return "required"
        case "extra_forbidden":
            hint = did_you_mean(name, allowed) or f" (expected one of: {', '.join(allowed)})"
            return f"unknown field{hint}"
        case "value_error":
            return str(ctx["error"])
        case "greater_than_equal":
            return f"must be at least {ctx['ge']:g}"
        case "less_than_equal":
            return f"must be at most {ctx['le']:g}"
        case "string_too_short":
            return "must not be empty"
        case "string_too_long":
            return f"must be at most {ctx['max_length']} characters"
        case "string_pattern_mismatch":
            return KEY_RULE
        case "string_type":
            return "must be text"
        case "int_type" | "int_parsing" | "int_from_float":
            return "must be a whole number"
        case "float_type" | "float_parsing" | "finite_number":
            return "must be a number"
        case "literal_error":
            return f"must be one of: {ctx['expected']}"
        case "dict_type":
            return "must be a mapping"
        case "tuple_type" | "list_type":
            return "must be a list of entries"
        case "model_type" | "model_attributes_type":
            return "must be a mapping of fields"
    return error["msg"]
