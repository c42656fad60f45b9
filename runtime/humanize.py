"""Docker's human-readable durations and sizes for tables."""

import time


def parse_rfc3339(stamp: str) -> float:
    """Seconds since the epoch of a UTC stamp such as 2026-11-26T12:00:00.123456789Z
    (or with +00:00); pyctr writes only UTC. Read by slicing, as the format is fixed:
    time.strptime and calendar would cost `pyctr ps` a sixth of its time to import."""
    if not stamp or stamp.startswith("0001-"):
        return 0.0
    if stamp[4:5] != "-" or stamp[7:8] != "-" or stamp[10:11] not in ("T", "t") \
            or stamp[13:14] != ":" or stamp[16:17] != ":":
        raise ValueError(f"not an RFC 3339 time: {stamp!r}")
    days = days_since_epoch(int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]))
    base = days * 86400 + int(stamp[11:13]) * 3600 + int(stamp[14:16]) * 60 + int(stamp[17:19])
    digits = stamp[20:].split("+")[0].rstrip("Z") if stamp[19:20] == "." else ""
    return base + (float("0." + digits) if digits.isdigit() else 0.0)


def days_since_epoch(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a date of the proleptic Gregorian calendar, as calendar.timegm
    counts them: H. Hinnant's days_from_civil (howardhinnant.github.io/date_algorithms.html),
    which counts years from March, so that February's leap day ends each one."""
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise ValueError(f"no such date: {year}-{month}-{day}")
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def duration(seconds: float) -> str:
    """Docker's units.HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // (24 * 7)} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // (24 * 30)} months"
    return f"{hours // (24 * 365)} years"


def ago(stamp: str) -> str:
    """Docker's CREATED column: "2 minutes ago", "About an hour ago"; empty for no stamp."""
    if not stamp:
        return ""
    return duration(time.time() - parse_rfc3339(stamp)) + " ago"


def size(n: float) -> str:
    """Docker's sizes in `images`: three significant digits, decimal units (7792915 -> 7.79MB)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g}{unit}"
        n /= 1000


def binary_size(n: float) -> str:
    """Docker's units.BytesSize (binary), used by `stats`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024:
            return f"{n:.4g}{unit}"
        n /= 1024
    return f"{n:.4g}PiB"


def table(rows: list[list[str]], headers: list[str]) -> str:
    """Left-aligned columns three spaces apart, as Docker prints them."""
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    lines = ["   ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in [headers] + rows]
    return "\n".join(lines)
