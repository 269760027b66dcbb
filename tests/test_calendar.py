"""The calendar file: RFC 5545 structure, Paris time zone rules, folding and escaping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from bot.services.calendar import CalendarEvent, build_ics, vtimezone, workshop_uid

PARIS = ZoneInfo("Europe/Paris")


def unfold(ics: str) -> list[str]:
    """Content lines as a reader sees them (RFC 5545 3.1: CRLF + one space is removed)."""
    return ics.replace("\r\n ", "").split("\r\n")


def unescape(value: str) -> str:
    out, chars = [], iter(value)
    for char in chars:
        if char == "\\":
            following = next(chars)
            out.append("\n" if following in "nN" else following)
        else:
            out.append(char)
    return "".join(out)


def properties(ics: str) -> dict[str, str]:
    """Name (with parameters) -> value, for the lines of the VEVENT."""
    lines = unfold(ics)
    event = lines[lines.index("BEGIN:VEVENT") + 1 : lines.index("END:VEVENT")]
    return dict(line.split(":", 1) for line in event)


def event(**changes: object) -> CalendarEvent:
    values: dict[str, object] = {
        "uid": workshop_uid(12, 345),
        "starts_at": datetime(2026, 12, 4, 13, 0, tzinfo=UTC),  # 14:00 in Paris (winter)
        "ends_at": datetime(2026, 12, 4, 15, 0, tzinfo=UTC),
        "summary": "Atelier e-mail",
        "location": "EPN Montreynaud, 1 place de la Mairie, 42000 Saint-Étienne",
        "latitude": 45.44,
        "longitude": 4.39,
        "description": "Un atelier pour apprendre ensemble.",
        "stamp": datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
    }
    values.update(changes)
    return CalendarEvent(**values)  # type: ignore[arg-type]


def test_a_complete_calendar_with_crlf_lines_and_paris_times() -> None:
    ics = build_ics(event(), PARIS).decode()
    assert ics.endswith("END:VCALENDAR\r\n")
    assert "\n" not in ics.replace("\r\n", "")  # no bare LF anywhere
    lines = unfold(ics)
    assert lines[:5] == [
        "BEGIN:VCALENDAR",
        "PRODID:-//Ville de Saint-Etienne//capacity-bot//FR",
        "VERSION:2.0",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
    ]
    props = properties(ics)
    assert props["UID"] == "workshop-12-345@capacity-bot"
    assert props["DTSTAMP"] == "20261201T090000Z"
    assert props["DTSTART;TZID=Europe/Paris"] == "20261204T140000"
    assert props["DTEND;TZID=Europe/Paris"] == "20261204T160000"
    assert unescape(props["LOCATION"]) == (
        "EPN Montreynaud, 1 place de la Mairie, 42000 Saint-Étienne"
    )
    assert tuple(float(part) for part in props["GEO"].split(";")) == (45.44, 4.39)
    assert props["SUMMARY"] == "Atelier e-mail"
    open_components: list[str] = []
    for line in lines[:-1]:  # properly nested components
        if line.startswith("BEGIN:"):
            open_components.append(line[6:])
        elif line.startswith("END:"):
            assert open_components.pop() == line[4:]
    assert open_components == [] and lines[-1] == ""


def test_summer_times_use_the_summer_offset() -> None:
    summer = event(
        starts_at=datetime(2026, 6, 10, 12, 30, tzinfo=UTC),
        ends_at=datetime(2026, 6, 10, 14, 30, tzinfo=UTC),
    )
    props = properties(build_ics(summer, PARIS).decode())
    assert props["DTSTART;TZID=Europe/Paris"] == "20260610T143000"


def test_the_paris_time_zone_has_its_standard_and_daylight_rules() -> None:
    lines = vtimezone(PARIS, datetime(2026, 12, 4).date()).to_ical().decode().split("\r\n")
    text = "\n".join(lines)
    assert lines[0:2] == ["BEGIN:VTIMEZONE", "TZID:Europe/Paris"]
    daylight = text[text.index("BEGIN:DAYLIGHT") : text.index("END:DAYLIGHT")]
    standard = text[text.index("BEGIN:STANDARD") : text.index("END:STANDARD")]
    assert "RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3" in daylight
    assert "TZOFFSETFROM:+0100" in daylight and "TZOFFSETTO:+0200" in daylight
    assert "DTSTART:20250330T020000" in daylight and "TZNAME:CEST" in daylight
    assert "RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10" in standard
    assert "TZOFFSETFROM:+0200" in standard and "TZOFFSETTO:+0100" in standard
    assert "DTSTART:20251026T030000" in standard and "TZNAME:CET" in standard


def test_a_zone_without_daylight_saving_has_one_standard_observance() -> None:
    zone = vtimezone(ZoneInfo("Africa/Algiers"), datetime(2026, 5, 1).date())
    lines = zone.to_ical().decode().split("\r\n")
    assert "BEGIN:DAYLIGHT" not in lines
    assert "TZOFFSETTO:+0100" in lines and "BEGIN:STANDARD" in lines


def test_text_escaping_of_commas_semicolons_backslashes_and_newlines() -> None:
    props = properties(build_ics(event(summary="a,b;c\\d\ne\r\nf"), PARIS).decode())
    assert props["SUMMARY"] == "a\\,b\\;c\\\\d\\ne\\nf"
    tricky = "Cours; niveau 1, débutants\nSalle « B » \\ 2e étage"
    props = properties(build_ics(event(summary=tricky, description=tricky), PARIS).decode())
    assert unescape(props["SUMMARY"]) == tricky
    assert unescape(props["DESCRIPTION"]) == tricky
    assert "\n" not in props["DESCRIPTION"]


def test_long_lines_are_folded_at_75_octets_without_splitting_characters() -> None:
    long_text = "Démarches en ligne à la CAF — العربية أيضًا — " * 8
    ics = build_ics(event(description=long_text), PARIS)
    for line in ics.split(b"\r\n"):
        assert len(line) <= 75
        line.decode()  # each physical line is valid UTF-8: no character was cut
    props = properties(ics.decode())
    assert unescape(props["DESCRIPTION"]) == long_text


@given(st.text(min_size=0, max_size=400))
def test_folding_round_trips_any_text(text: str) -> None:
    text = text.replace("\r", "").replace("\n", "")
    ics = build_ics(event(description=text), PARIS)
    assert all(len(part) <= 75 for part in ics.split(b"\r\n"))
    assert all(part.decode() for part in ics.split(b"\r\n")[:-1])  # no character cut in two
    assert unescape(properties(ics.decode())["DESCRIPTION"]) == text


def test_last_modified_is_given_in_utc() -> None:
    changed = datetime(2026, 11, 30, 8, 0, tzinfo=UTC) + timedelta(minutes=1)
    props = properties(build_ics(event(last_modified=changed), PARIS).decode())
    assert props["LAST-MODIFIED"] == "20261130T080100Z"
