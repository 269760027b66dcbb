"""The calendar file as a calendar app reads it: parsed back with the `icalendar` package.

These pin what matters to phones and desktop calendars (fields, instants, the VTIMEZONE's
transitions, escaping, folding, CRLF) rather than the byte layout of the file.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar, Event, Timezone

from bot.services.calendar import CalendarEvent, build_ics, workshop_uid

PARIS = ZoneInfo("Europe/Paris")
ARABIC = "ورشة البريد الإلكتروني، المستوى الأول؛ للمبتدئين"


def event(starts_at: datetime, **changes: object) -> CalendarEvent:
    values: dict[str, object] = {
        "uid": workshop_uid(7, 81),
        "starts_at": starts_at,
        "ends_at": starts_at + timedelta(hours=2),
        "summary": "Atelier e-mail",
        "location": "EPN Montreynaud, 1 place de la Mairie, 42000 Saint-Étienne",
        "latitude": 45.4412,
        "longitude": 4.3873,
        "description": "Un atelier pour apprendre ensemble.",
        "stamp": datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
    }
    values.update(changes)
    return CalendarEvent(**values)  # type: ignore[arg-type]


def parse(ics: bytes) -> tuple[Calendar, Event, Timezone]:
    calendar = Calendar.from_ical(ics)
    (vevent,) = calendar.events
    (vtimezone,) = calendar.timezones
    return calendar, vevent, vtimezone


# Instants on both sides of, and on the days of, the changes of 2026 (29 March, 25 October),
# given in UTC as the database gives them.
MOMENTS = {
    name: moment.astimezone(UTC)
    for name, moment in {
        "winter": datetime(2026, 1, 15, 14, 0, tzinfo=PARIS),
        "summer": datetime(2026, 7, 2, 9, 30, tzinfo=PARIS),
        "the evening before spring": datetime(2026, 3, 28, 23, 30, tzinfo=PARIS),
        # 02:30 does not exist that night: zoneinfo reads it with the winter offset, i.e. 03:30.
        "02:30 on the spring change": datetime(2026, 3, 29, 2, 30, tzinfo=PARIS),
        "after the spring change": datetime(2026, 3, 29, 10, 0, tzinfo=PARIS),
        "01:30 on the autumn change": datetime(2026, 10, 25, 1, 30, tzinfo=PARIS),
        "02:30 summer time, autumn change": datetime(2026, 10, 25, 2, 30, tzinfo=PARIS),
        "after the autumn change": datetime(2026, 10, 25, 14, 0, tzinfo=PARIS),
        "across the autumn change": datetime(2026, 10, 24, 23, 0, tzinfo=PARIS),
        "December": datetime(2026, 12, 4, 14, 0, tzinfo=PARIS),
    }.items()
}


@pytest.mark.parametrize("starts_at", MOMENTS.values(), ids=MOMENTS.keys())
def test_start_and_end_are_paris_wall_times_of_the_same_instants(starts_at: datetime) -> None:
    item = event(starts_at, ends_at=starts_at + timedelta(hours=3))
    _, vevent, vtimezone = parse(build_ics(item, PARIS))
    for name, moment in (("DTSTART", item.starts_at), ("DTEND", item.ends_at)):
        prop = vevent[name]
        assert prop.params["TZID"] == "Europe/Paris"
        assert prop.to_ical().decode() == moment.astimezone(PARIS).strftime("%Y%m%dT%H%M%S")
        # The same instant, read with the TZID (in UTC: PEP 495 makes a repeated wall time
        # unequal to any time of another zone)...
        assert prop.dt.astimezone(UTC) == moment
        # ...and read with the file's own VTIMEZONE instead of the reader's zone database.
        own = prop.dt.replace(tzinfo=vtimezone.to_tz(lookup_tzid=False))
        assert own.astimezone(UTC) == moment


def test_the_spring_workshop_at_0230_reads_as_0330_summer_time() -> None:
    _, vevent, _ = parse(build_ics(event(MOMENTS["02:30 on the spring change"]), PARIS))
    assert vevent["DTSTART"].to_ical() == b"20260329T033000"
    assert vevent["DTSTART"].dt.astimezone(UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_the_autumn_workshop_at_0230_summer_time_is_the_first_0230() -> None:
    # RFC 5545 3.3.5: a repeated local time means its first occurrence (summer time).
    _, vevent, _ = parse(build_ics(event(MOMENTS["02:30 summer time, autumn change"]), PARIS))
    assert vevent["DTSTART"].to_ical() == b"20261025T023000"
    assert vevent["DTSTART"].dt.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize("name", ["winter", "02:30 on the spring change", "December"])
def test_the_vtimezone_agrees_with_the_zone_database_for_years(name: str) -> None:
    """Every hour from the year before the event to three years after it."""
    starts_at = MOMENTS[name]
    _, _, vtimezone = parse(build_ics(event(starts_at), PARIS))
    assert vtimezone["TZID"] == "Europe/Paris"
    own = vtimezone.to_tz(lookup_tzid=False)
    moment = datetime(starts_at.year - 1, 1, 1, tzinfo=UTC)
    wrong = []
    while moment < datetime(starts_at.year + 4, 1, 1, tzinfo=UTC):
        if moment.astimezone(own).utcoffset() != moment.astimezone(PARIS).utcoffset():
            wrong.append(moment)
        moment += timedelta(hours=1)
    assert wrong == []


def test_the_vtimezone_has_yearly_rules_starting_at_the_local_time_before_the_change() -> None:
    _, _, vtimezone = parse(build_ics(event(MOMENTS["December"]), PARIS))
    (daylight,) = vtimezone.daylight
    (standard,) = vtimezone.standard
    for observance, month, onset, before, after, name in (
        (daylight, 3, datetime(2025, 3, 30, 2, 0), 1, 2, "CEST"),
        (standard, 10, datetime(2025, 10, 26, 3, 0), 2, 1, "CET"),
    ):
        assert observance.DTSTART == onset  # the wall time read in TZOFFSETFROM (RFC 5545)
        assert observance.TZOFFSETFROM == timedelta(hours=before)
        assert observance.TZOFFSETTO == timedelta(hours=after)
        assert observance["TZNAME"] == name
        (rule,) = observance.rrules  # a rule, not a list of dates: Outlook needs yearly rules
        assert dict(rule) == {"FREQ": ["YEARLY"], "BYMONTH": [month], "BYDAY": ["-1SU"]}
        assert "RDATE" not in observance


def test_a_zone_without_changes_has_one_fixed_observance() -> None:
    algiers = ZoneInfo("Africa/Algiers")
    _, vevent, vtimezone = parse(build_ics(event(MOMENTS["summer"]), algiers))
    assert vevent["DTSTART"].params["TZID"] == "Africa/Algiers"
    assert vtimezone.daylight == []
    (standard,) = vtimezone.standard
    assert standard.TZOFFSETFROM == standard.TZOFFSETTO == timedelta(hours=1)
    assert standard.DTSTART <= datetime(2025, 1, 1)


def test_the_calendar_and_event_properties() -> None:
    changed = datetime(2026, 2, 27, 16, 45, 12, tzinfo=UTC)
    item = event(MOMENTS["winter"], last_modified=changed)
    calendar, vevent, _ = parse(build_ics(item, PARIS))
    assert calendar["VERSION"] == "2.0"
    assert calendar["PRODID"] == "-//Ville de Saint-Etienne//capacity-bot//FR"
    assert calendar["CALSCALE"] == "GREGORIAN"
    assert calendar["METHOD"] == "PUBLISH"
    assert vevent["UID"] == "workshop-7-81@capacity-bot"
    assert vevent["DTSTAMP"].dt == item.stamp and vevent["DTSTAMP"].to_ical() == b"20260301T090000Z"
    assert vevent["LAST-MODIFIED"].dt == changed
    assert vevent["LAST-MODIFIED"].to_ical() == b"20260227T164512Z"
    assert vevent["SUMMARY"] == "Atelier e-mail"
    assert vevent["LOCATION"] == item.location
    assert vevent["DESCRIPTION"] == item.description
    assert (vevent["GEO"].latitude, vevent["GEO"].longitude) == (45.4412, 4.3873)
    assert vevent["STATUS"] == "CONFIRMED" and vevent["TRANSP"] == "OPAQUE"
    assert [component.name for component in calendar.subcomponents] == ["VTIMEZONE", "VEVENT"]


def test_no_last_modified_when_the_workshop_never_changed() -> None:
    _, vevent, _ = parse(build_ics(event(MOMENTS["winter"]), PARIS))
    assert "LAST-MODIFIED" not in vevent


def test_the_uid_is_the_same_each_time_so_a_new_download_updates_the_entry() -> None:
    first = parse(build_ics(event(MOMENTS["winter"]), PARIS))[1]
    later = event(MOMENTS["summer"], stamp=datetime(2026, 5, 1, tzinfo=UTC), summary="Autre")
    assert parse(build_ics(later, PARIS))[1]["UID"] == first["UID"]
    assert workshop_uid(7, 82) != workshop_uid(7, 81) != workshop_uid(8, 81)


TEXTS = {
    "punctuation": "Cours; niveau 1, débutants \\ salle « B »",
    "newlines": "Ligne 1\nLigne 2\r\nLigne 3\rFin\n\nAprès un paragraphe",
    "arabic": ARABIC + "\n" + "مركز الحي، ١ ساحة البلدية",
    "colon and quotes": 'Rendez-vous : 14h "précises"',
}


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_texts_come_back_unchanged(text: str) -> None:
    item = event(MOMENTS["winter"], summary=text, location=text, description=text)
    ics = build_ics(item, PARIS)
    _, vevent, _ = parse(ics)
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    for name in ("SUMMARY", "LOCATION", "DESCRIPTION"):
        assert vevent[name] == expected
    unfolded = ics.decode().replace("\r\n ", "")
    assert "\n" not in unfolded.replace("\r\n", "")  # the newlines are escaped as \n


def test_escaping_on_the_wire() -> None:
    text = "a,b;c\\d\ne"
    ics = build_ics(event(MOMENTS["winter"], summary=text), PARIS).decode()
    assert "\r\nSUMMARY:a\\,b\\;c\\\\d\\ne\r\n" in ics


@pytest.mark.parametrize("text", ["Démarches en ligne à la CAF — ", ARABIC + " — ", "x" * 3])
def test_long_lines_are_folded_at_75_octets_with_crlf(text: str) -> None:
    long_text = text * 40
    ics = build_ics(event(MOMENTS["summer"], description=long_text, location=long_text), PARIS)
    assert ics.startswith(b"BEGIN:VCALENDAR\r\n") and ics.endswith(b"END:VCALENDAR\r\n")
    assert ics.count(b"\n") == ics.count(b"\r\n") and ics.count(b"\r") == ics.count(b"\r\n")
    physical = ics.split(b"\r\n")[:-1]
    assert any(line.startswith(b" ") for line in physical)
    for line in physical:
        assert len(line) <= 75
        line.decode()  # no UTF-8 character is cut in two
    _, vevent, _ = parse(ics)
    assert vevent["DESCRIPTION"] == vevent["LOCATION"] == long_text


def test_the_file_is_utf8_without_a_byte_order_mark() -> None:
    ics = build_ics(event(MOMENTS["winter"], summary=ARABIC), PARIS)
    assert not ics.startswith(b"\xef\xbb\xbf")
    assert ARABIC.encode() in ics.replace(b"\r\n ", b"").replace(b"\\,", b",").replace(b"\\;", b";")


def test_the_vtimezone_covers_the_year_before_the_event() -> None:
    """Calendars may show the entry near New Year: the rules start in the previous year."""
    for when in (date(2026, 1, 2), date(2027, 12, 30)):
        starts_at = datetime(when.year, when.month, when.day, 10, tzinfo=PARIS)
        _, _, vtimezone = parse(build_ics(event(starts_at), PARIS))
        starts = [o.DTSTART for o in vtimezone.standard + vtimezone.daylight]
        assert min(starts).year == when.year - 1
