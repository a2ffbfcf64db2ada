"""Parsing and formatting of sizes, durations and keep-alive values (pure functions)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
# The largest size accepted anywhere (a budget, a headroom): 1 PiB, far above the memory of any one
# machine, and far below where a size stops converting to a float (a 400-digit budget overflowed).
MAX_SIZE_BYTES = 1024**5


def parse_size(value: str | int) -> int:
    """Bytes from ``12GiB``, ``16 GB``, ``512MiB`` or a plain integer of bytes.

    >>> parse_size("1.5GiB")
    1610612736
    >>> parse_size("16GB")
    16000000000
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return _within_size_cap(value, value)
    if not isinstance(value, str):
        raise ValueError(f'expected a size such as "12GiB" or a whole number of bytes, got {value!r}')
    match = _SIZE_RE.match(value)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{shorten(value)!r} is not a size; write it like 12GiB, 16GB or 512MiB")
    size = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    return _within_size_cap(value, int(size) if math.isfinite(size) else MAX_SIZE_BYTES + 1)


def _within_size_cap(value: str | int, size: int) -> int:
    if size > MAX_SIZE_BYTES:
        raise ValueError(f"{shorten(value)} is larger than 1 PiB, the largest size accepted")
    return size


# Go's time.ParseDuration syntax, which Ollama uses for keep_alive strings (ollama.md §3.1).
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
# The longest duration accepted (a timeout, a keep-alive): 10 years. Longer ones meant "forever" or
# were typos, and they break what consumes them: a deadline past the platform's time_t, a Go
# time.Duration on the server (which overflows at 292 years), NaN or infinity in the JSON.
MAX_DURATION_S = 10 * 365 * 86400.0


class DurationOutOfRange(ValueError):
    """A well-formed duration beyond ``MAX_DURATION_S`` (a keep-alive says "use forever" instead)."""


def parse_duration(value: str | int | float) -> float:
    """Seconds from a Go-style duration (``30m``, ``1h30m``, ``300ms``) or a number of seconds.

    >>> parse_duration("1h30m")
    5400.0
    >>> parse_duration("45")
    45.0
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a duration such as 30s, 5m or 1h30m")
    if isinstance(value, int | float):
        # float() of a 400-digit integer overflows; anything past the cap is refused anyway.
        too_long = isinstance(value, int) and abs(value) > MAX_DURATION_S
        return _within_duration_cap(value, math.inf if too_long else float(value))
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if re.fullmatch(r"\d+(\.\d+)?", body):
        return _within_duration_cap(value, sign * float(body))
    pos, total = 0, 0.0
    for part in _GO_PART.finditer(body):
        if part.start() != pos:
            break
        total += float(part.group(1)) * _GO_UNITS[part.group(2)]
        pos = part.end()
    if not body or pos != len(body):
        raise ValueError(f"{shorten(value)!r} is not a duration; write it like 30s, 5m, 1h30m or a number of seconds")
    return _within_duration_cap(value, sign * total)


def _within_duration_cap(value: str | int | float, seconds: float) -> float:
    if math.isnan(seconds):
        raise ValueError(f"{value!r} is not a duration; write it like 30s, 5m, 1h30m or a number of seconds")
    if abs(seconds) > MAX_DURATION_S:
        raise DurationOutOfRange(f"{shorten(value)} is longer than 10 years, the longest duration accepted")
    return seconds


def shorten(value: str | int | float, limit: int = 40) -> str:
    """A value as an error message quotes it: a 400-digit number is cut in the middle.

    An integer too large for ``str()`` (over 4,300 digits, Python's limit) is described instead.
    """
    if isinstance(value, int) and value.bit_length() > 4000:
        return "a number that large"
    text = str(value)
    return text if len(text) <= limit else f"{text[: limit // 2]}…{text[-limit // 2 :]}"


@dataclass(frozen=True)
class KeepAlive:
    """How long a server keeps a model after its last request; ``seconds is None`` means forever."""

    seconds: float | None

    @property
    def forever(self) -> bool:
        return self.seconds is None

    def to_ollama(self) -> int | float:
        """Ollama accepts a JSON number of seconds, negative meaning forever (ollama.md §3.1).

        A number sidesteps the unit trap: the string ``"300"`` is a 400 error, the number 300 is not.
        """
        if self.seconds is None or self.seconds * 1e9 >= 2**63:
            # Beyond Go's int64 nanoseconds the server's float-to-int conversion overflows (to the
            # minimum int64 on amd64: expire when idle); the nearest thing it can hold is forever.
            # Parsing caps keep-alives at 10 years, so only a value built in code gets here.
            return -1
        return int(self.seconds) if float(self.seconds).is_integer() else self.seconds

    def describe(self) -> str:
        return "forever" if self.seconds is None else format_seconds(self.seconds)


def parse_keep_alive(value: str | int | float) -> KeepAlive:
    """``forever``/``-1``/any negative → forever; ``0`` → unload when idle; ``30m``, ``1h``, ``300`` → seconds.

    >>> parse_keep_alive("forever").forever
    True
    >>> parse_keep_alive("30m").to_ollama()
    1800
    """
    if isinstance(value, str) and value.strip().lower() in {"forever", "inf", "infinite", "never"}:
        return KeepAlive(None)
    seconds = parse_duration(value)
    if 0 < seconds < 1e-9:
        # Ollama holds keep_alive in whole nanoseconds: a number becomes time.Duration(t * 1e9) and a
        # string goes through time.ParseDuration, both truncating (api/types.go Duration.UnmarshalJSON),
        # so less than 1 ns is 0: unload as soon as idle. Say so here rather than let it surprise.
        return KeepAlive(0.0)
    return KeepAlive(None if seconds < 0 else seconds)


def format_seconds(seconds: float) -> str:
    """Compact duration for humans: ``0.42s``, ``12.3s``, ``5m``, ``1h30m``."""
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m{secs}s" if secs else f"{minutes}m"


def human_bytes(n: int | None) -> str:
    """Decimal units as `ollama ps` prints them (``6.3 GB``), so numbers match what users compare with."""
    if n is None:
        return "?"
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def percent(part: int, whole: int) -> int:
    return 0 if whole <= 0 else math.floor(100 * part / whole + 0.5)


def processor(size: int | None, size_vram: int | None) -> str:
    """Where a model runs, in `ollama ps` words: ``100% GPU``, ``100% CPU``, ``25%/75% CPU/GPU``."""
    if not size or size_vram is None:
        return "unknown"
    if size_vram <= 0:
        return "100% CPU"
    if size_vram >= size:
        return "100% GPU"
    gpu = percent(size_vram, size)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


def until(expires_at: datetime | None, now: datetime | None = None) -> str:
    """Relative expiry as `ollama ps` shows it (ollama.md §2.4)."""
    if expires_at is None:
        return "unknown"
    now = now or datetime.now(UTC)
    seconds = (expires_at - now).total_seconds()
    if seconds > 20 * 365 * 86400:
        return "forever"
    if seconds <= 0:
        return "stopping"
    return f"in {format_seconds(seconds)}"
