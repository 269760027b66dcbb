"""Survey definitions: the shipped files are sound, and every mistake is one line naming the
file, the question and the field. No database."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.runtime import cli
from bot.services.surveys.definitions import (
    SURVEYS_DIR,
    QuestionType,
    SurveyDefinitionError,
    load_surveys,
)
from bot.services.taxonomy import NEED_CATEGORIES
from bot.text.i18n import load_language
from locales import LOCALES_DIR

Survey = dict[str, Any]


def question(survey: Survey, key: str) -> dict[str, Any]:
    return next(q for q in survey["questions"] if q["key"] == key)


def test_the_shipped_surveys_load() -> None:
    catalog = load_surveys()
    assert set(catalog.surveys) == {"post_workshop", "autonomy_before", "follow_up", "needs"}
    assert catalog["post_workshop"].anonymous
    assert not any(catalog[key].anonymous for key in ("needs", "autonomy_before", "follow_up"))
    kinds = {q.type for survey in catalog for q in survey.questions}
    assert kinds == set(QuestionType)


def test_before_and_after_ask_the_same_autonomy_question() -> None:
    catalog = load_surveys()
    before = catalog["autonomy_before"].question("autonomy")
    after = catalog["post_workshop"].question("autonomy")
    assert before is not None and after is not None
    assert (before.text, before.low, before.high) == (after.text, after.low, after.high)
    assert after.compare_with == "autonomy_before.autonomy"


def test_the_needs_survey_uses_the_national_categories() -> None:
    hard = load_surveys()["needs"].question("hard_tasks")
    assert hard is not None and hard.taxonomy
    keys = {choice.key for choice in hard.choices} - {"other"}
    assert keys <= set(NEED_CATEGORIES)
    assert {
        "email",
        "securite_numerique",
        "parentalite",
        "insertion_professionnelle",
        "sante",
    } <= keys
    help_kind = load_surveys()["needs"].question("help_kind")
    assert help_kind is not None
    assert [c.key for c in help_kind.choices] == [
        "collectif",
        "individuel",
        "demarche",
        "a_distance",
    ]


@pytest.mark.parametrize("language", ["fr", "en", "ar"])
def test_survey_buttons_and_toasts_fit(language: str) -> None:
    catalog = load_language(LOCALES_DIR / language)
    buttons = ["start", "later", "done", "skip", "answer_yes", "answer_no"]
    toasts = ["saved", "nothing_ticked", "not_optional", "stale", "already_done", "closed"]
    assert all(len(catalog[f"surveys.{key}"]) <= 40 for key in buttons)
    assert all(len(catalog[f"surveys.{key}"]) <= 200 for key in toasts)


def broken(directory: Path, name: str, change: Callable[[Survey], None]) -> Path:
    """A copy of the shipped surveys where `name` went through `change`."""
    for path in SURVEYS_DIR.glob("*.yaml"):
        shutil.copy(path, directory / path.name)
    path = directory / f"{name}.yaml"
    survey = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(survey)
    path.write_text(yaml.safe_dump(survey, allow_unicode=True), encoding="utf-8")
    return directory


def set_in(key: str, field: str, value: Any) -> Callable[[Survey], None]:
    return lambda survey: question(survey, key).__setitem__(field, value)


def drop_arabic(survey: Survey) -> None:
    del question(survey, "hard_tasks")["text"]["ar"]


def duplicate_key(survey: Survey) -> None:
    question(survey, "days")["key"] = "times"


def long_choice(survey: Survey) -> None:
    question(survey, "days")["choices"][0]["text"]["fr"] = (
        "Le lundi, sauf pendant les vacances scolaires"
    )


def workshop_in_open_survey(survey: Survey) -> None:
    survey["intro"]["en"] = "About {workshop}"


def date_in_open_survey(survey: Survey) -> None:
    survey["intro"]["fr"] = "L'atelier du {date}"


def keyless(survey: Survey) -> None:
    del survey["questions"][1]["key"]


MISTAKES = [
    ("post_workshop", set_in("satisfaction", "type", "stars"), "'satisfaction', field type"),
    ("needs", drop_arabic, "'hard_tasks', field text.ar: Field required"),
    (
        "needs",
        set_in("hard_tasks", "jumps", [{"when": "other", "to": "hard_tasks"}]),
        "'hard_tasks', field jumps[0].to: 'hard_tasks' is not a later question",
    ),
    (
        "needs",
        set_in("hard_tasks", "jumps", [{"when": "other", "to": "nowhere"}]),
        "'hard_tasks', field jumps[0].to: 'nowhere' is not a later question",
    ),
    (
        "needs",
        set_in("hard_tasks", "jumps", [{"when": "dancing", "to": "days"}]),
        "'hard_tasks', field jumps[0].when: 'dancing' is not a possible answer",
    ),
    ("post_workshop", set_in("try_alone", "next", "satisfaction"), "'try_alone', field next"),
    (
        "post_workshop",
        set_in(
            "satisfaction", "choices", [{"key": "a", "text": {"fr": "a", "en": "a", "ar": "a"}}]
        ),
        "'satisfaction', field choices: a scale question has no choices",
    ),
    (
        "needs",
        set_in(
            "hard_tasks", "choices", [{"key": "cooking", "text": {"fr": "a", "en": "a", "ar": "a"}}]
        ),
        "'hard_tasks', field choices: 'cooking' is not a need category",
    ),
    (
        "post_workshop",
        set_in("comment", "optinal", True),
        "'comment', field optinal: unknown field",
    ),
    (
        "follow_up",
        set_in("alone_since", "text", {"fr": "Bonjour {name}", "en": "x", "ar": "x"}),
        "'alone_since', field text.fr: only {workshop}",
    ),
    ("needs", workshop_in_open_survey, "needs.yaml: survey, field intro.en: only {workshop}"),
    (
        "needs",
        date_in_open_survey,
        "needs.yaml: survey, field intro.fr: only {workshop} and {date}",
    ),
    (
        "post_workshop",
        set_in("autonomy", "compare_with", "autonomy_before.nothing"),
        "'autonomy', field compare_with",
    ),
    ("needs", duplicate_key, "'times', field key: two questions have this key"),
    ("needs", long_choice, "'days', field choices[0].text.fr: longer than 40 characters"),
    (
        "follow_up",
        lambda survey: survey.pop("anonymous"),
        "survey, field anonymous: Field required",
    ),
    ("needs", keyless, "question #2, field key: Field required"),
    (
        "post_workshop",
        set_in("try_alone", "topics", {"default": [], "cuisine": []}),
        "'try_alone', field topics.cuisine: not a need category",
    ),
    ("autonomy_before", set_in("autonomy", "max_length", 20), "'autonomy', field max_length"),
]


@pytest.mark.parametrize(("name", "change", "expected"), MISTAKES)
def test_a_mistake_is_one_line_naming_file_question_and_field(
    tmp_path: Path, name: str, change: Callable[[Survey], None], expected: str
) -> None:
    with pytest.raises(SurveyDefinitionError) as error:
        load_surveys(broken(tmp_path, name, change))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path.name}/{name}.yaml: ")
    assert expected in message


def test_a_missing_survey_and_broken_yaml_are_named(tmp_path: Path) -> None:
    directory = broken(tmp_path, "needs", lambda survey: None)
    (directory / "follow_up.yaml").unlink()
    with pytest.raises(SurveyDefinitionError, match=r"follow_up\.yaml: file missing"):
        load_surveys(directory)
    (directory / "follow_up.yaml").write_text("title: [unclosed\n", encoding="utf-8")
    with pytest.raises(SurveyDefinitionError, match=r"follow_up\.yaml: not valid YAML at line 2"):
        load_surveys(directory)


def test_run_stops_with_one_line_and_exit_2(tmp_path, monkeypatch, capsys) -> None:
    directory = broken(tmp_path, "needs", set_in("days", "type", "calendar"))
    monkeypatch.setattr("bot.services.surveys.definitions.SURVEYS_DIR", directory)
    monkeypatch.setattr("bot.logs.configure_logging", lambda *args: None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_TOKEN", "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/bot.sqlite3")
    assert cli.main(["run"]) == cli.EXIT_CONFIG
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "needs.yaml: question 'days', field type" in lines[0]
    assert not (tmp_path / "bot.sqlite3").exists()  # stopped before touching the database
