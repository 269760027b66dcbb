"""Calendar files (RFC 5545 iCalendar) so a resident can add a workshop to their phone.

Phones differ in what they accept, so the file sticks to what every calendar reads: a
VCALENDAR with one VEVENT whose times carry a TZID, and the VTIMEZONE that defines that TZID
(derived from the IANA zone, with yearly rules), CRLF line ends, lines folded at 75 octets
and text values escaped.
"""

from __future__ import annotations

import calendar as gregorian
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

PRODID = "-//Ville de Saint-Etienne//capacity-bot//FR"
LINE_OCTETS = 75
CRLF = "\r\n"
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


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


def escape_text(value: str) -> str:
    """TEXT value escaping (RFC 5545 3.3.11): backslash, semicolon, comma and newlines."""
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\n")
        .replace("\r", "\n")
        .replace("\n", "\\n")
    )


def fold(line: str) -> str:
    """Fold a content line into chunks of at most 75 octets, never inside a UTF-8 character.

    Continuation lines start with one space, which counts in their 75 octets.
    """
    chunks: list[str] = []
    current: list[str] = []
    size, limit = 0, LINE_OCTETS
    for char in line:
        octets = len(char.encode())
        if size + octets > limit:
            chunks.append("".join(current))
            current, size, limit = [], 0, LINE_OCTETS - 1
        current.append(char)
        size += octets
    chunks.append("".join(current))
    return (CRLF + " ").join(chunks)


def _utc_stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _local(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S")


def _offset(delta: timedelta) -> str:
    minutes = int(delta.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{minutes:02d}"


@dataclass(frozen=True)
class _Transition:
    at: datetime  # the instant, UTC
    offset_before: timedelta
    offset_after: timedelta
    name_after: str
    is_dst_after: bool


@cache
def _transitions(zone: ZoneInfo, year: int) -> list[_Transition]:
    """The offset changes of `zone` during `year`, found hour by hour then to the second."""
    found: list[_Transition] = []
    moment = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    step = timedelta(hours=1)
    while moment < end:
        after = moment + step
        if moment.astimezone(zone).utcoffset() != after.astimezone(zone).utcoffset():
            low, high = moment, after
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                if middle.astimezone(zone).utcoffset() == low.astimezone(zone).utcoffset():
                    low = middle
                else:
                    high = middle
            high = high.replace(microsecond=0)
            before_local, after_local = low.astimezone(zone), high.astimezone(zone)
            found.append(
                _Transition(
                    at=high,
                    offset_before=before_local.utcoffset() or timedelta(0),
                    offset_after=after_local.utcoffset() or timedelta(0),
                    name_after=after_local.tzname() or "",
                    is_dst_after=bool(after_local.dst()),
                )
            )
        moment = after
    return found


def _yearly_rule(local_start: datetime) -> str:
    """The RRULE of a transition that happens on the n-th (or last) weekday of its month."""
    day = local_start.day
    days_in_month = gregorian.monthrange(local_start.year, local_start.month)[1]
    week = -1 if day + 7 > days_in_month else (day - 1) // 7 + 1
    weekday = _WEEKDAYS[local_start.weekday()]
    return f"FREQ=YEARLY;BYMONTH={local_start.month};BYDAY={week}{weekday}"


def vtimezone(zone: ZoneInfo, around: date) -> list[str]:
    """A VTIMEZONE for `zone` valid for events from the year before `around` onwards."""
    lines = ["BEGIN:VTIMEZONE", f"TZID:{zone.key}"]
    transitions = _transitions(zone, around.year - 1)
    if not transitions:
        sample = datetime(around.year, 1, 1, tzinfo=UTC).astimezone(zone)
        offset = _offset(sample.utcoffset() or timedelta(0))
        lines += [
            "BEGIN:STANDARD",
            "DTSTART:19700101T000000",
            f"TZOFFSETFROM:{offset}",
            f"TZOFFSETTO:{offset}",
            f"TZNAME:{sample.tzname()}",
            "END:STANDARD",
        ]
    for transition in transitions:
        kind = "DAYLIGHT" if transition.is_dst_after else "STANDARD"
        # DTSTART is the local wall time just before the change, in the old offset.
        local_start = (transition.at + transition.offset_before).replace(tzinfo=None)
        lines += [
            f"BEGIN:{kind}",
            f"DTSTART:{_local(local_start)}",
            f"RRULE:{_yearly_rule(local_start)}",
            f"TZOFFSETFROM:{_offset(transition.offset_before)}",
            f"TZOFFSETTO:{_offset(transition.offset_after)}",
            f"TZNAME:{transition.name_after}",
            f"END:{kind}",
        ]
    lines.append("END:VTIMEZONE")
    return lines


def build_ics(event: CalendarEvent, tz: ZoneInfo) -> bytes:
    """The .ics file of one event, times shown in `tz` (the programme's zone)."""
    starts_local = event.starts_at.astimezone(tz)
    ends_local = event.ends_at.astimezone(tz)
    lines = [
        "BEGIN:VCALENDAR",
        f"PRODID:{PRODID}",
        "VERSION:2.0",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        *vtimezone(tz, starts_local.date()),
        "BEGIN:VEVENT",
        f"UID:{event.uid}",
        f"DTSTAMP:{_utc_stamp(event.stamp)}",
        f"DTSTART;TZID={tz.key}:{_local(starts_local)}",
        f"DTEND;TZID={tz.key}:{_local(ends_local)}",
        f"SUMMARY:{escape_text(event.summary)}",
        f"LOCATION:{escape_text(event.location)}",
        f"GEO:{event.latitude:.6f};{event.longitude:.6f}",
        f"DESCRIPTION:{escape_text(event.description)}",
        "STATUS:CONFIRMED",
        "TRANSP:OPAQUE",
    ]
    if event.last_modified is not None:
        lines.append(f"LAST-MODIFIED:{_utc_stamp(event.last_modified)}")
    lines += ["END:VEVENT", "END:VCALENDAR"]
    return "".join(fold(line) + CRLF for line in lines).encode()
