"""Calendar files (RFC 5545 iCalendar) so a resident can add a workshop to their phone.

Phones differ in what they accept, so the file sticks to what every calendar reads: a
VCALENDAR with one VEVENT whose times carry a TZID, and the VTIMEZONE that defines that TZID
(derived from the IANA zone, with yearly rules). The `icalendar` package writes the file: CRLF
line ends, lines folded at 75 octets and text values escaped.
"""

from __future__ import annotations

import calendar as gregorian
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, Timezone, TimezoneDaylight, TimezoneStandard

PRODID = "-//Ville de Saint-Etienne//capacity-bot//FR"
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class CalendarEvent:
    """One workshop as a calendar entry, already in the person's language."""

    uid: str
    starts_at: datetime
    ends_at: datetime
    summary: str
    location: str
    latitude: float
    longitude: float
    description: str
    stamp: datetime  # when the file was made (DTSTAMP)
    last_modified: datetime | None = None


def workshop_uid(workshop_id: int, registration_id: int) -> str:
    """Stable per registration: downloading the file again updates the same entry."""
    return f"workshop-{workshop_id}-{registration_id}@capacity-bot"


def _text(value: str) -> str:
    """A TEXT value with every line end as LF, which icalendar escapes as \\n.

    A lone CR (old Mac line ends) is no line end in RFC 5545 and icalendar before 7.3 writes it
    raw into the file.
    """
    return value.replace("\r\n", "\n").replace("\r", "\n")


def _onset(zone: ZoneInfo, wall: datetime, before: timedelta, after: timedelta) -> datetime:
    """The local time, read in the offset `before`, at which `zone` changes (RFC 5545 3.6.5).

    icalendar names a change by a wall time on one side or the other of it (03:00 for both
    Paris changes, where spring's happens at 02:00 winter time): find the instant it means.
    """
    for instant in (wall - before, wall - after):
        moment = instant.replace(tzinfo=UTC)
        if (moment - _SECOND).astimezone(zone).utcoffset() == before and (
            moment.astimezone(zone).utcoffset() == after
        ):
            return instant + before
    return wall


def _yearly_rule(local_start: datetime) -> dict[str, object]:
    """The RRULE of a change that happens on the n-th (or last) weekday of its month."""
    day = local_start.day
    days_in_month = gregorian.monthrange(local_start.year, local_start.month)[1]
    week = -1 if day + 7 > days_in_month else (day - 1) // 7 + 1
    weekday = _WEEKDAYS[local_start.weekday()]
    return {"FREQ": "YEARLY", "BYMONTH": local_start.month, "BYDAY": f"{week}{weekday}"}


def vtimezone(zone: ZoneInfo, around: date) -> Timezone:
    """A VTIMEZONE for `zone` valid for events from the year before `around` onwards.

    icalendar finds the changes of that year but lists them as dates (RDATE), and Outlook shifts
    events by an hour under such a VTIMEZONE: each change becomes a yearly rule (RRULE) instead,
    starting at the local time before the change.
    """
    year = around.year - 1
    found = Timezone.from_tzinfo(
        zone, tzid=zone.key, first_date=date(year, 1, 1), last_date=date(year + 1, 1, 1)
    )
    observances = found.daylight + found.standard
    changes = [o for o in observances if o.TZOFFSETFROM != o.TZOFFSETTO]
    result = Timezone()
    result.add("TZID", zone.key)
    if not changes:  # one offset all year: the observance icalendar made says so
        result.add_component(observances[0])
    starts = [
        (_onset(zone, wall, o.TZOFFSETFROM, o.TZOFFSETTO), o)
        for o in changes
        for wall in [o.DTSTART, *(start for start, _ in o.rdates)]
    ]
    for onset, found_observance in sorted(starts, key=lambda pair: pair[0]):
        kind = TimezoneDaylight if found_observance.name == "DAYLIGHT" else TimezoneStandard
        observance = kind()
        observance.DTSTART = onset
        observance.add("RRULE", _yearly_rule(onset))
        observance.TZOFFSETFROM = found_observance.TZOFFSETFROM
        observance.TZOFFSETTO = found_observance.TZOFFSETTO
        observance.add("TZNAME", found_observance["TZNAME"])
        result.add_component(observance)
    return result


def build_ics(event: CalendarEvent, tz: ZoneInfo) -> bytes:
    """The .ics file of one event, times shown in `tz` (the programme's zone)."""
    starts_local = event.starts_at.astimezone(tz)
    ends_local = event.ends_at.astimezone(tz)
    calendar = Calendar()
    calendar.add("PRODID", PRODID)
    calendar.add("VERSION", "2.0")
    calendar.add("CALSCALE", "GREGORIAN")
    calendar.add("METHOD", "PUBLISH")
    calendar.add_component(vtimezone(tz, starts_local.date()))
    entry = Event()
    entry.add("UID", event.uid)
    entry.add("DTSTAMP", event.stamp.astimezone(UTC))
    # Wall times with the TZID of the VTIMEZONE above.
    entry.add("DTSTART", starts_local.replace(tzinfo=None), parameters={"TZID": tz.key})
    entry.add("DTEND", ends_local.replace(tzinfo=None), parameters={"TZID": tz.key})
    entry.add("SUMMARY", _text(event.summary))
    entry.add("LOCATION", _text(event.location))
    entry.add("GEO", (round(event.latitude, 6), round(event.longitude, 6)))
    entry.add("DESCRIPTION", _text(event.description))
    entry.add("STATUS", "CONFIRMED")
    entry.add("TRANSP", "OPAQUE")
    if event.last_modified is not None:
        entry.add("LAST-MODIFIED", event.last_modified.astimezone(UTC))
    calendar.add_component(entry)
    ics: bytes = calendar.to_ical(sorted=False)
    return ics
