"""Survey definitions: YAML files shipped here, loaded and validated once at start-up.

One file per survey; the file name is the survey's key. A mistake in a file stops start-up with
one line naming the file, the question and the field (SurveyDefinitionError), so that a broken
survey is found by whoever edits it, never by a resident halfway through it.

Question types: `single` and `multiple` choice, a 1-5 `scale`, `yes_no`, short `text`.
`optional: true` adds a skip button. `jumps` send an answer to a later question (or to `end`),
`next` replaces the default "the following question"; both only go forward, so a survey always
ends. Every text is given in French, English and Arabic. Texts are plain (no HTML); a survey
about a workshop may write `{workshop}`, replaced by the workshop's title, and `{date}`, its day
in words (say when the workshop was, rather than a delay that a setting may change).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from bot.services.taxonomy import NEED_CATEGORIES

# libyaml's safe loader when PyYAML has it (same results, about 10 times faster: the
# catalogs and surveys read at start-up took a third of a second in pure Python, issue 6).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

SURVEYS_DIR = Path(__file__).parent
END = "end"  # a jump or `next` target: the survey ends there
OTHER = "other"  # a choice key allowed beside the national categories
WORKSHOP_PLACEHOLDER = "{workshop}"
DATE_PLACEHOLDER = "{date}"
BUTTON_CHARS = 40  # a choice is a button: it must fit on a phone screen
SCALE = tuple(range(1, 6))
YES_NO = ("yes", "no")

# The surveys the bot triggers by name, and whether each is about one workshop or always open.
POST_WORKSHOP = "post_workshop"
AUTONOMY_BEFORE = "autonomy_before"
FOLLOW_UP = "follow_up"
NEEDS = "needs"
SHIPPED = {
    POST_WORKSHOP: "workshop",
    AUTONOMY_BEFORE: "workshop",
    FOLLOW_UP: "workshop",
    NEEDS: "open",
}

Key = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class SurveyDefinitionError(Exception):
    """A survey file is missing or wrong; the message is one line for the operator."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Texts(_Strict):
    """A text in every shipped language."""

    fr: Text
    en: Text
    ar: Text

    def as_dict(self) -> dict[str, str]:
        return {"fr": self.fr, "en": self.en, "ar": self.ar}


class QuestionType(StrEnum):
    SINGLE = "single"
    MULTIPLE = "multiple"
    SCALE = "scale"
    YES_NO = "yes_no"
    TEXT = "text"


class ChoiceDef(_Strict):
    key: Key
    text: Texts


class JumpDef(_Strict):
    """On this answer (a choice key, yes/no, or a scale value), go to question `to`."""

    when: Annotated[str, StringConstraints(min_length=1, max_length=64)] | int
    to: Key


class QuestionDef(_Strict):
    key: Key
    type: QuestionType
    text: Texts
    # A short name of the question for the channel's response cards.
    label: Texts
    optional: bool = False
    choices: tuple[ChoiceDef, ...] = ()
    # Choices read at the time of asking: the neighbourhoods in the database, or the topics
    # of the workshop's need category (`topics`). Static `choices` come after them.
    choices_from: Literal["territories", "workshop_topics"] | None = None
    topics: dict[str, tuple[ChoiceDef, ...]] = Field(default_factory=dict)
    # Choice keys must be national categories of digital mediation (bot/services/taxonomy.py).
    taxonomy: bool = False
    # The words under the ends of a scale ("1 = not at all", "5 = completely").
    low: Texts | None = None
    high: Texts | None = None
    max_length: int | None = Field(default=None, ge=1, le=1000)
    jumps: tuple[JumpDef, ...] = ()
    next: Key | None = None
    # "survey.question": the same question asked elsewhere, shown beside it in digests.
    compare_with: str | None = None

    @property
    def is_choice(self) -> bool:
        return self.type in (QuestionType.SINGLE, QuestionType.MULTIPLE)

    @property
    def text_limit(self) -> int:
        return self.max_length or 500

    def static_keys(self) -> set[str]:
        keys = {choice.key for choice in self.choices}
        for topic_choices in self.topics.values():
            keys |= {choice.key for choice in topic_choices}
        return keys


class SurveyDef(_Strict):
    key: Key
    title: Texts
    # Anonymous: answers are stored without any link to the person (workshop and week only).
    anonymous: bool
    scope: Literal["workshop", "open"]
    # The invitation, or the first words before the first question.
    intro: Texts
    thanks: Texts
    # A digest is sent to the facilitators' channel when a run closes.
    digest: bool = False
    # Each completed response is shown to the channel as a card.
    channel_card: bool = True
    questions: tuple[QuestionDef, ...] = Field(min_length=1, max_length=50)

    def question(self, key: str) -> QuestionDef | None:
        return next((q for q in self.questions if q.key == key), None)

    def index_of(self, key: str) -> int:
        return next(i for i, q in enumerate(self.questions) if q.key == key)

    def following(self, question: QuestionDef, answer: set[str] | None) -> QuestionDef | None:
        """The question after `question` given its answer (None when skipped); None at the end."""
        target = question.next
        if answer is not None:
            target = next((j.to for j in question.jumps if str(j.when) in answer), target)
        if target == END:
            return None
        if target is not None:
            return self.question(target)
        index = self.index_of(question.key) + 1
        return self.questions[index] if index < len(self.questions) else None


@dataclass(frozen=True)
class Option:
    """One answer button as asked: a choice key and its text (localized, or a proper noun such
    as a neighbourhood), or a scale value or yes/no, whose look the handler decides (None)."""

    key: str
    text: dict[str, str] | str | None


@dataclass(frozen=True)
class SurveyCatalog:
    """Every survey definition, by key."""

    surveys: dict[str, SurveyDef]

    def __getitem__(self, key: str) -> SurveyDef:
        return self.surveys[key]

    def __iter__(self) -> Iterator[SurveyDef]:
        return iter(self.surveys.values())

    def keys_where(self, **flags: bool) -> tuple[str, ...]:
        """Keys of the surveys whose flags (anonymous, digest...) have the given values."""
        return tuple(
            s.key for s in self if all(getattr(s, name) == value for name, value in flags.items())
        )


def load_surveys(directory: Path | None = None) -> SurveyCatalog:
    """Read and check every `*.yaml` of `directory` (default: the shipped ones, here); the
    surveys the bot asks by name must all be there."""
    directory = directory or SURVEYS_DIR
    surveys: dict[str, SurveyDef] = {}
    for path in sorted(directory.glob("*.yaml")):
        surveys[path.stem] = load_survey(path)
    for key, scope in SHIPPED.items():
        where = f"{directory.name}/{key}.yaml"
        if key not in surveys:
            raise SurveyDefinitionError(f"{where}: file missing (the bot asks this survey)")
        if surveys[key].scope != scope:
            raise SurveyDefinitionError(f"{where}: survey, field scope: must be {scope!r}")
    for survey in surveys.values():
        for question in survey.questions:
            if question.compare_with is not None:
                _check_comparison(surveys, survey, question, directory)
    return SurveyCatalog(surveys)


def load_survey(path: Path) -> SurveyDef:
    where = f"{path.parent.name}/{path.name}"
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise SurveyDefinitionError(f"{where}: not valid YAML{line}") from None
    except OSError as exc:
        raise SurveyDefinitionError(f"{where}: cannot be read ({exc.strerror})") from None
    if not isinstance(raw, dict):
        raise SurveyDefinitionError(f"{where}: expected a mapping with title, questions...")
    if "key" in raw and raw["key"] != path.stem:
        raise SurveyDefinitionError(f"{where}: survey, field key: must be the file name")
    try:
        survey = SurveyDef.model_validate({**raw, "key": path.stem})
    except ValidationError as exc:
        raise SurveyDefinitionError(_describe(where, raw, exc.errors()[0])) from None
    _check(where, survey)
    return survey


def _describe(where: str, raw: dict[str, Any], error: Any) -> str:
    """One line from pydantic's first error: file, question (by key when it has one), field."""
    loc = list(error["loc"])
    problem = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        problem = "unknown field"
    if len(loc) >= 2 and loc[0] == "questions" and isinstance(loc[1], int):
        questions = raw.get("questions") or []
        entry = questions[loc[1]] if loc[1] < len(questions) else None
        name = entry.get("key") if isinstance(entry, dict) else None
        who = f"question {name!r}" if isinstance(name, str) else f"question #{loc[1] + 1}"
        return f"{where}: {who}, field {_dotted(loc[2:]) or 'question'}: {problem}"
    return f"{where}: survey, field {_dotted(loc) or 'survey'}: {problem}"


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _texts(model: BaseModel, path: str = "") -> Iterator[tuple[str, str]]:
    """Every (field path, text) of a model, for the placeholder check."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        here = f"{path}.{name}" if path else name
        if isinstance(value, Texts):
            for language, text in value.as_dict().items():
                yield f"{here}.{language}", text
        elif isinstance(value, BaseModel):
            yield from _texts(value, here)
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _texts(item, f"{here}[{i}]")
        elif isinstance(value, dict):
            for key, items in value.items():
                for i, item in enumerate(items):
                    yield from _texts(item, f"{here}.{key}[{i}]")


_BRACE = re.compile(r"[{}]")
BRACES_RULE = "only {workshop} and {date} may be written in braces, and only in a workshop survey"


def _misplaced_braces(text: str, survey: SurveyDef) -> bool:
    placeholders = (WORKSHOP_PLACEHOLDER, DATE_PLACEHOLDER)
    if survey.scope != "workshop" and any(p in text for p in placeholders):
        return True
    for placeholder in placeholders:
        text = text.replace(placeholder, "")
    return bool(_BRACE.search(text))


_Fail = Callable[[QuestionDef | None, str, str], SurveyDefinitionError]


def _check(where: str, survey: SurveyDef) -> None:
    """The rules pydantic cannot see: types and their fields, keys, jumps, placeholders."""

    def fail(question: QuestionDef | None, field: str, problem: str) -> SurveyDefinitionError:
        who = f"question {question.key!r}" if question else "survey"
        return SurveyDefinitionError(f"{where}: {who}, field {field}: {problem}")

    for field, text in _texts(survey.model_copy(update={"questions": ()})):
        if _misplaced_braces(text, survey):
            raise fail(None, field, BRACES_RULE)
    seen: set[str] = set()
    for index, question in enumerate(survey.questions):
        if question.key in seen:
            raise fail(question, "key", "two questions have this key")
        seen.add(question.key)
        _check_question(survey, question, fail)
        later = {q.key for q in survey.questions[index + 1 :]} | {END}
        for i, jump in enumerate(question.jumps):
            if jump.to not in later:
                raise fail(question, f"jumps[{i}].to", f"{jump.to!r} is not a later question")
        if question.next is not None and question.next not in later:
            raise fail(question, "next", f"{question.next!r} is not a later question")


def _check_question(survey: SurveyDef, question: QuestionDef, fail: _Fail) -> None:
    kind = question.type
    for field, text in _texts(question):
        if _misplaced_braces(text, survey):
            raise fail(question, field, BRACES_RULE)
    for field, text in _button_texts(question):
        if len(text) > BUTTON_CHARS:
            raise fail(question, field, f"longer than {BUTTON_CHARS} characters (a button)")
    if question.is_choice:
        if not question.choices and question.choices_from is None:
            raise fail(question, "choices", f"a {kind} question needs choices")
    elif question.choices or question.choices_from or question.topics:
        raise fail(question, "choices", f"a {kind} question has no choices")
    if question.choices_from == "workshop_topics":
        if survey.scope != "workshop":
            raise fail(question, "choices_from", "workshop topics need a workshop survey")
        if "default" not in question.topics:
            raise fail(question, "topics", "needs a 'default' list")
        unknown = sorted(set(question.topics) - set(NEED_CATEGORIES) - {"default"})
        if unknown:
            raise fail(
                question, f"topics.{unknown[0]}", "not a need category of bot/services/taxonomy.py"
            )
    elif question.topics:
        raise fail(question, "topics", "only with choices_from: workshop_topics")
    choice_lists = [question.choices] + [
        (*topic, *question.choices) for topic in question.topics.values()
    ]
    for choices in choice_lists:
        keys = [choice.key for choice in choices]
        duplicate = next((key for key in keys if keys.count(key) > 1), None)
        if duplicate is not None:
            raise fail(question, "choices", f"the key {duplicate!r} is used twice")
    if question.taxonomy:
        wrong = sorted(question.static_keys() - set(NEED_CATEGORIES) - {OTHER})
        if wrong:
            raise fail(
                question,
                "choices",
                f"{wrong[0]!r} is not a need category of bot/services/taxonomy.py",
            )
    if (question.low or question.high) and kind is not QuestionType.SCALE:
        raise fail(question, "low" if question.low else "high", "only for a scale question")
    if question.max_length is not None and kind is not QuestionType.TEXT:
        raise fail(question, "max_length", "only for a text question")
    if question.compare_with is not None and kind is not QuestionType.SCALE:
        raise fail(question, "compare_with", "only for a scale question")
    answers = _possible_answers(question)
    for i, jump in enumerate(question.jumps):
        if kind is QuestionType.TEXT:
            raise fail(question, "jumps", "a text answer cannot decide a jump")
        if str(jump.when) not in answers:
            raise fail(question, f"jumps[{i}].when", f"{jump.when!r} is not a possible answer")


def _button_texts(question: QuestionDef) -> Iterator[tuple[str, str]]:
    for i, choice in enumerate(question.choices):
        for language, text in choice.text.as_dict().items():
            yield f"choices[{i}].text.{language}", text
    for category, choices in question.topics.items():
        for i, choice in enumerate(choices):
            for language, text in choice.text.as_dict().items():
                yield f"topics.{category}[{i}].text.{language}", text


def _possible_answers(question: QuestionDef) -> set[str]:
    if question.type is QuestionType.SCALE:
        return {str(n) for n in SCALE}
    if question.type is QuestionType.YES_NO:
        return set(YES_NO)
    return question.static_keys()


def _check_comparison(
    surveys: dict[str, SurveyDef], survey: SurveyDef, question: QuestionDef, directory: Path
) -> None:
    survey_key, _, question_key = (question.compare_with or "").partition(".")
    other = surveys.get(survey_key)
    target = other.question(question_key) if other else None
    if target is None or target.type is not QuestionType.SCALE:
        raise SurveyDefinitionError(
            f"{directory.name}/{survey.key}.yaml: question {question.key!r}, field compare_with: "
            f"{question.compare_with!r} is not a scale question of another survey"
        )
