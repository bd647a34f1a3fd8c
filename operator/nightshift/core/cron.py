"""A faithful port of github.com/robfig/cron/v3 v3.0.1, the cron library of the CronJob controller.

kube-controller-manager (v1.36.3) parses a CronJob's schedule with ``cron.ParseStandard`` (as
``"TZ=<spec.timeZone> <schedule>"``) and computes scheduled times with ``SpecSchedule.Next``,
then picks the time to run with its own ``mostRecentScheduleTime``
(pkg/controller/cronjob/utils.go). The operator predicts those times (nextScheduleTime, missed
runs, which run of a dependency is due), so it must compute exactly what the controller computes,
including robfig's peculiar behaviour on DST days:

* the hour loop adds absolute hours, so a wall time that does not exist (02:30 on a spring-forward
  day in New York) is never seen and the run moves to the next day, and
* on a fall-back day the repeated hour is walked twice, so ``30 1 * * *`` runs twice.

Those follow from Go's time semantics, so this module also ports the few pieces of Go's ``time``
package that ``Next`` relies on: ``time.Date`` (with its one-step correction of non-existent and
ambiguous wall times), ``AddDate``, ``Add``, ``Truncate`` and ``ParseDuration``. Times are kept as
whole Unix seconds internally (``Next`` works on second boundaries); the zone is any ``tzinfo``
(normally a ``zoneinfo.ZoneInfo``, which reads the same tz database as Go on this machine).

tests/unit/test_cron_robfig.py checks this module against a table produced by the real library
(hack/cron-table).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
import zoneinfo

__all__ = [
    "STAR_BIT",
    "ConstantDelaySchedule",
    "CronError",
    "Missed",
    "MostRecent",
    "Schedule",
    "SpecSchedule",
    "every",
    "go_date",
    "load_location",
    "most_recent_schedule_time",
    "next_schedule_time",
    "parse_duration",
    "parse_standard",
]


class CronError(ValueError):
    """robfig/cron rejected a spec; the message is robfig's own (what the API server reports)."""


# --- bounds and bits (spec.go) ---------------------------------------------------------------

STAR_BIT = 1 << 63
"""Set in a field's bits when the field was written with ``*`` or ``?``; dayMatches looks at it."""

_UINT64 = (1 << 64) - 1


@dataclasses.dataclass(frozen=True)
class _Bounds:
    min: int
    max: int
    names: dict[str, int] | None = None


_SECONDS = _Bounds(0, 59)
_MINUTES = _Bounds(0, 59)
_HOURS = _Bounds(0, 23)
_DOM = _Bounds(1, 31)
_MONTHS = _Bounds(
    1,
    12,
    {
        "jan": 1,
        "feb": 2,
        "mar": 3,
        "apr": 4,
        "may": 5,
        "jun": 6,
        "jul": 7,
        "aug": 8,
        "sep": 9,
        "oct": 10,
        "nov": 11,
        "dec": 12,
    },
)
_DOW = _Bounds(0, 6, {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6})


# --- Go time semantics -------------------------------------------------------------------------

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_GO_ZERO = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
"""Go's zero time.Time (what Next returns when it finds nothing); only used inside the port."""
_SECOND_NS = 1_000_000_000
_MAX_DURATION = (1 << 63) - 1
_MIN_DURATION = -(1 << 63)


def _unix(t: dt.datetime) -> tuple[int, int]:
    """Whole Unix seconds (floored) and the nanoseconds past them, of an aware datetime."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"a time zone aware datetime is needed, got {t!r}")
    delta = t - _EPOCH
    return delta.days * 86400 + delta.seconds, delta.microseconds * 1000


def _local(u: int, loc: dt.tzinfo) -> dt.datetime:
    """The instant `u` (Unix seconds) as wall-clock fields in `loc`, as Go's t.In(loc) shows it."""
    return dt.datetime.fromtimestamp(u, loc)


def _offset(u: int, loc: dt.tzinfo) -> int:
    """The UTC offset (seconds) in effect at instant `u`: Go's loc.lookup(u)."""
    off = _local(u, loc).utcoffset()
    assert off is not None
    return off.days * 86400 + off.seconds


def go_date(year: int, month: int, day: int, hour: int, minute: int, second: int, loc: dt.tzinfo) -> int:
    """Go's ``time.Date(year, month, day, hour, min, sec, 0, loc)`` as Unix seconds.

    Out-of-range fields are normalised (month 13 is January of the next year, day 32 runs into the
    next month, hour 24 into the next day). The wall time is then placed with Go's rule, which is
    not Python's fold rule: take the offset in effect at the wall time read as if it were UTC,
    subtract it, and if that instant lies in another zone period use that period's offset instead
    (once, no iteration). So a wall time in a spring-forward gap lands one gap-length later or
    earlier depending on the zone's side, and a repeated wall time picks whichever pass this one
    correction lands on -- exactly what robfig's Next sees.
    """
    m = month - 1
    year += m // 12
    m %= 12
    days = dt.date(year, m + 1, 1).toordinal() - _EPOCH_ORDINAL + day - 1
    wall = days * 86400 + hour * 3600 + minute * 60 + second
    # Go: offset := lookup(wall); if offset != 0 { utc := wall - offset; if utc is outside the
    # period found { offset = lookup(utc) } }. Inside the same period lookup(utc) is the same
    # offset, so in every case the offset used is lookup(wall - lookup(wall)).
    return wall - _offset(wall - _offset(wall, loc), loc)


def _add_date(u: int, loc: dt.tzinfo, years: int, months: int, days: int) -> int:
    """Go's ``t.AddDate(years, months, days)``: Date with the wall fields shifted, so it normalises."""
    w = _local(u, loc)
    return go_date(w.year + years, w.month + months, w.day + days, w.hour, w.minute, w.second, loc)


def _weekday(w: dt.datetime) -> int:
    """Go's Weekday: Sunday is 0."""
    return w.isoweekday() % 7


_ZONE_CACHE: dict[str, dt.tzinfo] = {}


def load_location(name: str) -> dt.tzinfo:
    """Go's ``time.LoadLocation``: "" and "UTC" are UTC; otherwise a tz database zone."""
    if name in ("", "UTC"):
        return dt.UTC
    if name == "Local":
        raise CronError("the controller's Local time zone is not known here; name a zone")
    if name not in _ZONE_CACHE:
        try:
            _ZONE_CACHE[name] = zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
            raise CronError(f"unknown time zone {name}") from e
    return _ZONE_CACHE[name]


# --- schedules -------------------------------------------------------------------------------


def _skip_steps(
    u: int, w: dt.datetime, loc: dt.tzinfo, unit: int, wrap: int, field: str, bits: int
) -> tuple[int, dt.datetime]:
    """Jump over the single steps of robfig's hour, minute or second loop that cannot stop it.

    Not in robfig: a speed-up with the same result. From wall value v the loop adds `unit`
    seconds at a time and stops at the first value whose bit is set or at the wrap to 0. While the
    UTC offset stays the same every step adds exactly one to the wall value, so the steps before
    the last one are skipped when the offset and the wall value at the far end show no change.
    Otherwise (a DST change inside the span, such as Lord Howe's half hour) nothing is skipped and
    robfig's own single steps run.
    """
    value: int = getattr(w, field)
    m = value + 1
    while m < wrap and not (1 << m) & bits:
        m += 1
    k = m - value - 1  # steps that cannot stop the loop
    if k <= 0:
        return u, w
    cand = u + unit * k
    wc = _local(cand, loc)
    if wc.utcoffset() == w.utcoffset() and getattr(wc, field) == value + k:
        return cand, wc
    return u, w


@dataclasses.dataclass(frozen=True)
class SpecSchedule:
    """robfig's SpecSchedule: one bit set per field (bit n = value n, plus STAR_BIT).

    `location` None stands for Go's ``time.Local`` default: the schedule is evaluated in the zone
    of the time handed to `next`. The controller always passes a zone ("TZ=..."), see
    `parse_standard`.
    """

    second: int
    minute: int
    hour: int
    dom: int
    month: int
    dow: int
    location: dt.tzinfo | None = None

    def bits(self) -> tuple[int, int, int, int, int, int]:
        return (self.second, self.minute, self.hour, self.dom, self.month, self.dow)

    def _day_matches(self, w: dt.datetime) -> bool:
        """dayMatches: dom AND dow when either was written with a star, else dom OR dow."""
        return self._day_matches_date(w.date())

    def _skip_days(self, u: int, w: dt.datetime, loc: dt.tzinfo) -> tuple[int, dt.datetime]:
        """The day loop's `_skip_steps`: skip days that cannot stop it while the offset holds.

        Only from a midnight (then no step needs robfig's DST nudge); the loop stops at a matching
        day or at the wrap to the 1st.
        """
        if w.hour or w.minute or w.second:
            return u, w
        day = w.date()
        k = 0
        while True:
            nxt = day + dt.timedelta(days=k + 1)
            if nxt.day == 1 or self._day_matches_date(nxt):
                break
            k += 1
        if k == 0:
            return u, w
        cand = u + 86400 * k
        wc = _local(cand, loc)
        if wc.utcoffset() == w.utcoffset() and wc.date() == day + dt.timedelta(days=k) and wc.hour == 0:
            return cand, wc
        return u, w

    def _day_matches_date(self, d: dt.date) -> bool:
        dom_match = bool((1 << d.day) & self.dom)
        dow_match = bool((1 << (d.isoweekday() % 7)) & self.dow)
        if self.dom & STAR_BIT or self.dow & STAR_BIT:
            return dom_match and dow_match
        return dom_match or dow_match

    def next(self, t: dt.datetime) -> dt.datetime | None:
        """``SpecSchedule.Next``: the first activation strictly after `t`, or None within five years.

        A line-by-line port of robfig's loop (goto WRAP becomes `continue`), including its
        quirks: the day loop nudges a midnight that DST moved to 23:00 or 01:00, the hour loop
        adds absolute hours (so non-existent wall hours are skipped and repeated ones walked
        twice), and the minute loop truncates on the Unix time line. The result is in t's zone.
        """
        orig = t.tzinfo
        assert orig is not None or t.utcoffset() is not None
        loc = self.location if self.location is not None else orig
        assert loc is not None
        u, _ = _unix(t)
        u += 1  # t.Add(1*time.Second - time.Duration(t.Nanosecond())): the next whole second
        added = False
        w = _local(u, loc)
        year_limit = w.year + 5
        while True:  # WRAP
            if w.year > year_limit:
                return None
            wrapped = False
            while not (1 << w.month) & self.month:
                if not added:
                    added = True
                    u = go_date(w.year, w.month, 1, 0, 0, 0, loc)
                u = _add_date(u, loc, 0, 1, 0)
                w = _local(u, loc)
                if w.month == 1:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not self._day_matches(w):
                if not added:
                    added = True
                    u = go_date(w.year, w.month, w.day, 0, 0, 0, loc)
                    w = _local(u, loc)
                u, w = self._skip_days(u, w, loc)
                u = _add_date(u, loc, 0, 0, 1)
                w = _local(u, loc)
                # robfig: "Notice if the hour is no longer midnight due to DST."
                if w.hour != 0:
                    if w.hour > 12:
                        u += (24 - w.hour) * 3600
                    else:
                        u -= w.hour * 3600
                    w = _local(u, loc)
                if w.day == 1:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not (1 << w.hour) & self.hour:
                if not added:
                    added = True
                    u = go_date(w.year, w.month, w.day, w.hour, 0, 0, loc)
                    w = _local(u, loc)
                u, w = _skip_steps(u, w, loc, 3600, 24, "hour", self.hour)
                u += 3600
                w = _local(u, loc)
                if w.hour == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not (1 << w.minute) & self.minute:
                if not added:
                    added = True
                    u -= u % 60  # t.Truncate(time.Minute): absolute, not wall-clock
                    w = _local(u, loc)
                u, w = _skip_steps(u, w, loc, 60, 60, "minute", self.minute)
                u += 60
                w = _local(u, loc)
                if w.minute == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not (1 << w.second) & self.second:
                added = True  # t.Truncate(time.Second) is a no-op on whole seconds
                u, w = _skip_steps(u, w, loc, 1, 60, "second", self.second)
                u += 1
                w = _local(u, loc)
                if w.second == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            return _local(u, orig) if orig is not None else _local(u, dt.UTC)


@dataclasses.dataclass(frozen=True)
class ConstantDelaySchedule:
    """``@every <duration>``: a fixed delay from whatever time it is asked about (no wall clock)."""

    delay_ns: int

    def next(self, t: dt.datetime) -> dt.datetime | None:
        """``t.Add(Delay - t.Nanosecond())``: the delay after t's whole second; never None."""
        u, _ = _unix(t)
        assert t.tzinfo is not None
        return _local(u + self.delay_ns // _SECOND_NS, t.tzinfo)


Schedule = SpecSchedule | ConstantDelaySchedule


def every(duration_ns: int) -> ConstantDelaySchedule:
    """robfig's ``Every``: below one second becomes one second; sub-second parts are dropped."""
    if duration_ns < _SECOND_NS:
        duration_ns = _SECOND_NS
    return ConstantDelaySchedule(duration_ns - duration_ns % _SECOND_NS)


# --- parser (parser.go) --------------------------------------------------------------------------

# Go's unicode.IsSpace (strings.Fields / TrimSpace); Python's str.split also splits on \x1c-\x1f.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_GO_SPACE_RE = re.compile(f"[{re.escape(_GO_SPACE)}]+")


def go_fields(s: str) -> list[str]:
    """Go's ``strings.Fields``."""
    return [f for f in _GO_SPACE_RE.split(s) if f]


def _go_quote(s: str) -> str:
    """Go's strconv.Quote for the ASCII-printable strings schedules are made of (others: \\x.. bytes)."""
    out = ['"']
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif " " <= c < "\x7f":
            out.append(c)
        else:
            out.extend(f"\\x{b:02x}" for b in c.encode())
    out.append('"')
    return "".join(out)


def _time_quote(s: str) -> str:
    """The time package's own quote (ParseDuration errors): non-ASCII and control bytes as \\x.."""
    out = ['"']
    for c in s:
        if ord(c) >= 0x80 or c < " ":
            out.extend(f"\\x{b:02x}" for b in c.encode("utf-8", "surrogatepass"))
        else:
            out.append("\\" + c if c in '"\\' else c)
    out.append('"')
    return "".join(out)


def _atoi(s: str) -> int:
    """Go's ``strconv.Atoi`` on a 64-bit machine: optional sign, ASCII digits, int64 range."""
    fail = f"strconv.Atoi: parsing {_go_quote(s)}: "
    body = s[1:] if s[:1] in ("+", "-") else s
    if not body:
        raise CronError(fail + "invalid syntax")
    n = 0
    for c in body:  # ParseUint: a syntax error before an overflow wins, an overflow stops the scan
        if not "0" <= c <= "9":
            raise CronError(fail + "invalid syntax")
        n = n * 10 + ord(c) - 48
        if n > _UINT64:
            raise CronError(fail + "value out of range")
    neg = s[0] == "-"
    if (not neg and n >= 1 << 63) or (neg and n > 1 << 63):
        raise CronError(fail + "value out of range")
    return -n if neg else n


def _must_parse_int(expr: str) -> int:
    try:
        num = _atoi(expr)
    except CronError as e:
        raise CronError(f"failed to parse int from {expr}: {e}") from None
    if num < 0:
        raise CronError(f"negative number ({num}) not allowed: {expr}")
    return num


def _parse_int_or_name(expr: str, names: dict[str, int] | None) -> int:
    if names is not None and expr.lower() in names:
        return names[expr.lower()]
    return _must_parse_int(expr)


def _get_bits(lo: int, hi: int, step: int) -> int:
    if step == 1:
        return (~(_UINT64 << (hi + 1)) & (_UINT64 << lo)) & _UINT64
    bits = 0
    for i in range(lo, hi + 1, step):
        bits |= 1 << i
    return bits


def _all(r: _Bounds) -> int:
    return _get_bits(r.min, r.max, 1) | STAR_BIT


def _get_range(expr: str, r: _Bounds) -> int:
    """getRange: ``number | number "-" number [ "/" number ]``, ``*`` or ``?`` for the whole range."""
    range_and_step = expr.split("/")
    low_and_high = range_and_step[0].split("-")
    single_digit = len(low_and_high) == 1
    extra = 0
    if low_and_high[0] in ("*", "?"):
        # robfig ignores anything after "*-" here: "*-5" is "*"
        start, end, extra = r.min, r.max, STAR_BIT
    else:
        start = _parse_int_or_name(low_and_high[0], r.names)
        if len(low_and_high) == 1:
            end = start
        elif len(low_and_high) == 2:
            end = _parse_int_or_name(low_and_high[1], r.names)
        else:
            raise CronError(f"too many hyphens: {expr}")
    if len(range_and_step) == 1:
        step = 1
    elif len(range_and_step) == 2:
        step = _must_parse_int(range_and_step[1])
        if single_digit:  # "N/step" means "N-max/step"
            end = r.max
        if step > 1:  # "*/2" is no longer a star for dayMatches
            extra = 0
    else:
        raise CronError(f"too many slashes: {expr}")
    if start < r.min:
        raise CronError(f"beginning of range ({start}) below minimum ({r.min}): {expr}")
    if end > r.max:
        raise CronError(f"end of range ({end}) above maximum ({r.max}): {expr}")
    if start > end:
        raise CronError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
    if step == 0:
        raise CronError(f"step of range should be a positive number: {expr}")
    return _get_bits(start, end, step) | extra


def _get_field(field: str, r: _Bounds) -> int:
    """getField: a comma-separated list of ranges (empty items are dropped, as FieldsFunc does)."""
    bits = 0
    for expr in (e for e in field.split(",") if e):
        bits |= _get_range(expr, r)
    return bits


def _go_duration_string_units() -> dict[bytes, int]:
    return {
        b"ns": 1,
        b"us": 1_000,
        "µs".encode(): 1_000,  # U+00B5 micro sign
        "μs".encode(): 1_000,  # U+03BC Greek mu
        b"ms": 1_000_000,
        b"s": _SECOND_NS,
        b"m": 60 * _SECOND_NS,
        b"h": 3600 * _SECOND_NS,
    }


_UNITS = _go_duration_string_units()


def parse_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` in nanoseconds (byte-wise, like Go), with Go's error messages."""
    orig = text
    s = text.encode("utf-8", "surrogatepass")

    def invalid(what: str = "invalid duration") -> CronError:
        return CronError(f"time: {what} {_time_quote(orig)}")

    neg = False
    if s[:1] in (b"-", b"+"):
        neg = s[:1] == b"-"
        s = s[1:]
    if s == b"0":
        return 0
    if not s:
        raise invalid()
    d = 0
    limit = 1 << 63
    while s:
        if not (s[0:1] == b"." or b"0" <= s[0:1] <= b"9"):
            raise invalid()
        i = 0
        v = 0
        while i < len(s) and 48 <= s[i] <= 57:
            if v > limit // 10:
                raise invalid()
            v = v * 10 + s[i] - 48
            if v > limit:
                raise invalid()
            i += 1
        pre = i > 0
        s = s[i:]
        post = False
        f, scale = 0, 1.0
        if s[:1] == b".":
            s = s[1:]
            i = 0
            overflow = False
            while i < len(s) and 48 <= s[i] <= 57:
                if not overflow:
                    if f > (limit - 1) // 10:
                        overflow = True
                    else:
                        y = f * 10 + s[i] - 48
                        if y > limit:
                            overflow = True
                        else:
                            f = y
                            scale *= 10
                i += 1
            post = i > 0
            s = s[i:]
        if not pre and not post:
            raise invalid()
        i = 0
        while i < len(s) and not (s[i] == 46 or 48 <= s[i] <= 57):
            i += 1
        if i == 0:
            raise invalid("missing unit in duration")
        unit_bytes, s = s[:i], s[i:]
        unit = _UNITS.get(unit_bytes)
        if unit is None:
            raise invalid(f"unknown unit {_time_quote(unit_bytes.decode('utf-8', 'surrogateescape'))} in duration")
        if v > limit // unit:
            raise invalid()
        v *= unit
        if f > 0:
            v += int(float(f) * (float(unit) / scale))
            if v > limit:
                raise invalid()
        d += v
        if d > limit:
            raise invalid()
    if neg:
        return -d
    if d > limit - 1:
        raise invalid()
    return d


_DESCRIPTORS: dict[str, tuple[int, int, int, int, int, int]] = {
    # second, minute, hour, dom, month, dow -- as parseDescriptor builds them (note the star bits)
    "@yearly": (1, 1, 1, 1 << 1, 1 << 1, _all(_DOW)),
    "@annually": (1, 1, 1, 1 << 1, 1 << 1, _all(_DOW)),
    "@monthly": (1, 1, 1, 1 << 1, _all(_MONTHS), _all(_DOW)),
    "@weekly": (1, 1, 1, _all(_DOM), _all(_MONTHS), 1),
    "@daily": (1, 1, 1, _all(_DOM), _all(_MONTHS), _all(_DOW)),
    "@midnight": (1, 1, 1, _all(_DOM), _all(_MONTHS), _all(_DOW)),
    "@hourly": (1, 1, _all(_HOURS), _all(_DOM), _all(_MONTHS), _all(_DOW)),
}


def _parse_descriptor(descriptor: str, loc: dt.tzinfo | None) -> Schedule:
    if descriptor in _DESCRIPTORS:
        return SpecSchedule(*_DESCRIPTORS[descriptor], location=loc)
    prefix = "@every "
    if descriptor.startswith(prefix):
        try:
            duration = parse_duration(descriptor[len(prefix) :])
        except CronError as e:
            raise CronError(f"failed to parse duration {descriptor}: {e}") from None
        return every(duration)
    raise CronError(f"unrecognized descriptor: {descriptor}")


def parse_standard(spec: str, location: dt.tzinfo | None = None) -> Schedule:
    """``cron.ParseStandard``: 5 fields (minute hour dom month dow) or a descriptor.

    A ``TZ=<zone> `` or ``CRON_TZ=<zone> `` prefix sets the schedule's zone, as in robfig (the
    controller builds ``"TZ=<spec.timeZone> <schedule>"``; the API server rejects the prefix in
    spec.schedule itself). Without one the zone is `location` (None: Go's time.Local, i.e. the
    zone of the time handed to next). Raises CronError with robfig's message.
    """
    if not spec:
        raise CronError("empty spec string")
    loc = location
    if spec.startswith(("TZ=", "CRON_TZ=")):
        i = spec.find(" ")
        eq = spec.find("=")
        if i < 0:
            # Go panics on spec[eq+1:-1]; k8s.io/kubernetes/pkg/util/parsers recovers it as this
            raise CronError("invalid schedule format: runtime error: slice bounds out of range [:-1]")
        name = spec[eq + 1 : i]
        try:
            loc = load_location(name)
        except CronError as e:
            raise CronError(f"provided bad location {name}: {e}") from None
        spec = spec[i:].strip(_GO_SPACE)
    if spec.startswith("@"):
        return _parse_descriptor(spec, loc)
    fields = go_fields(spec)
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    return SpecSchedule(
        second=_get_field("0", _SECONDS),
        minute=_get_field(fields[0], _MINUTES),
        hour=_get_field(fields[1], _HOURS),
        dom=_get_field(fields[2], _DOM),
        month=_get_field(fields[3], _MONTHS),
        dow=_get_field(fields[4], _DOW),
        location=loc,
    )


# --- the controller's mostRecentScheduleTime (pkg/controller/cronjob/utils.go) -------------------


class Missed(enum.Enum):
    """missedSchedulesType: how many start times the controller thinks it missed."""

    NONE = "none"
    FEW = "few"
    MANY = "many"


@dataclasses.dataclass(frozen=True)
class MostRecent:
    """What mostRecentScheduleTime returns: (earliestTime, mostRecentTime or nil, missed, error)."""

    earliest: dt.datetime
    most_recent: dt.datetime | None
    missed: Missed
    error: str | None = None


def _next_or_zero(schedule: Schedule, t: dt.datetime) -> dt.datetime:
    return schedule.next(t) or _GO_ZERO


def _go_sub_ns(a: dt.datetime, b: dt.datetime) -> int:
    """Go's ``a.Sub(b)`` in nanoseconds, saturating at the Duration range like Go."""
    d = a - b
    ns = (d.days * 86400 + d.seconds) * _SECOND_NS + d.microseconds * 1000
    return max(_MIN_DURATION, min(_MAX_DURATION, ns))


def _wrap_int64(n: int) -> int:
    return (n + (1 << 63)) % (1 << 64) - (1 << 63)


def _round_to_second_ns(ns: int) -> int:
    """Duration.Round(time.Second): half away from zero."""
    q, r = divmod(abs(ns), _SECOND_NS)
    if r * 2 >= _SECOND_NS:
        q += 1
    return q * _SECOND_NS if ns >= 0 else -q * _SECOND_NS


def most_recent_schedule_time(
    schedule: Schedule,
    now: dt.datetime,
    creation: dt.datetime,
    last_schedule_time: dt.datetime | None = None,
    starting_deadline_seconds: int | None = None,
    include_starting_deadline_seconds: bool = True,
) -> MostRecent:
    """A port of the controller's ``mostRecentScheduleTime`` (kubernetes v1.36.3, from its source).

    The earliest time is status.lastScheduleTime, else the CronJob's creation, moved up to
    ``now - startingDeadlineSeconds`` when that is later. With t1, t2 the next two times after it:
    nothing is due before t1; t1 is due before t2; beyond that the controller estimates the
    number of missed times as ``(now - t1) / (t2 - t1) + 1`` (a rough count: intervals that vary,
    like weekday schedules or DST days, make it inexact), jumps that far ahead minus one interval
    and walks Next to the last time <= now. More than 100 estimated misses is "many" (the
    controller's TooManyMissedTimes warning). A schedule whose first two times coincide or do not
    exist gives the controller's error "time difference between two schedules is less than 1
    second".
    """
    earliest = creation if last_schedule_time is None else last_schedule_time
    if include_starting_deadline_seconds and starting_deadline_seconds is not None:
        deadline = now - dt.timedelta(seconds=starting_deadline_seconds)
        if deadline > earliest:
            earliest = deadline
    t1 = _next_or_zero(schedule, earliest)
    # Go would ask Next(zero time), searching years 1-6; a schedule with no time in five years
    # (31 February) has none there either, so that is the zero time too.
    t2 = _next_or_zero(schedule, t1) if t1 != _GO_ZERO else _GO_ZERO
    if now < t1:
        return MostRecent(earliest, None, Missed.NONE)
    if now < t2:
        return MostRecent(earliest, t1, Missed.NONE)
    between = _round_to_second_ns(_go_sub_ns(t2, t1)) // _SECOND_NS
    if between < 1:
        return MostRecent(earliest, None, Missed.NONE, "time difference between two schedules is less than 1 second")
    elapsed = int(_go_sub_ns(now, t1) / _SECOND_NS)  # int64(d.Seconds()): float, truncated
    missed_count = elapsed // between + 1
    jump_ns = _wrap_int64(_wrap_int64((missed_count - 2) * between) * _SECOND_NS)
    potential = t1 + dt.timedelta(microseconds=jump_ns // 1000)
    most_recent: dt.datetime | None = None
    t = schedule.next(potential)
    while t is not None and not t > now:  # Go would loop on the zero time; a schedule that stops cannot
        most_recent = t
        t = schedule.next(t)
    missed = Missed.MANY if missed_count > 100 else Missed.FEW if missed_count > 0 else Missed.NONE
    return MostRecent(earliest, most_recent, missed)


def next_schedule_time(
    schedule: Schedule,
    now: dt.datetime,
    creation: dt.datetime,
    last_schedule_time: dt.datetime | None = None,
    starting_deadline_seconds: int | None = None,
) -> tuple[dt.datetime | None, Missed, str | None]:
    """The controller's ``nextScheduleTime``: the time it would create a Job for now, if any.

    Returns (time or None, missed, error); Missed.MANY is when the controller records the
    TooManyMissedTimes warning event.
    """
    r = most_recent_schedule_time(schedule, now, creation, last_schedule_time, starting_deadline_seconds, True)
    if r.most_recent is None or r.most_recent > now:
        return None, r.missed, r.error
    return r.most_recent, r.missed, r.error
