"""Go durations as Ollama decodes them (test infrastructure, not product code).

A keep_alive reaches Ollama's scheduler as a Go ``time.Duration``: int64 nanoseconds. Three
decoders produce it, and each has its own edge cases at the ends of that range:

- ``time.ParseDuration`` (Go's ``time/format.go``) for strings: integer arithmetic, and any
  value beyond int64 nanoseconds is an error (``"2562048h"`` and up are rejected);
- ``api.Duration.UnmarshalJSON`` (``api/types.go``) for a JSON number: seconds times 1e9 as a
  float64, converted to int64. Go leaves an out-of-range conversion to the hardware; on amd64
  (``CVTTSD2SQ``) the result is the "integer indefinite" value, the minimum int64, so a huge
  number turns into a hugely negative duration. The emulator follows amd64 (arm64 saturates
  at the maximum instead, which would mean "forever"). A fraction of a nanosecond truncates
  to 0;
- ``envconfig.KeepAlive`` (``envconfig/config.go``) for ``OLLAMA_KEEP_ALIVE``: a duration
  string, else integer seconds multiplied in int64 (wrapping on overflow), else the 5 minute
  default; a negative result means forever.

The emulator keeps durations in seconds (float): ``math.inf`` for Ollama's "forever" (the
maximum int64), other values exactly as Go's nanoseconds divided by 1e9, negative ones
included (they only arise from the overflow above and count as "expire when idle").
"""

from __future__ import annotations

import math

MAX_INT64 = 2**63 - 1
MIN_INT64 = -(2**63)
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9}
_UNITS["h"] = 3600 * 10**9
DEFAULT_KEEP_ALIVE_NS = 5 * 60 * 10**9  # envconfig.KeepAlive: 5 minutes


def go_quote(text: str) -> str:
    """``time.quote``: double quotes; non-ASCII and control characters as \\x escapes per byte."""
    out = ['"']
    for char in text:
        if ord(char) >= 0x80 or char < " ":
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
        else:
            out.append("\\" + char if char in '"\\' else char)
    out.append('"')
    return "".join(out)


def _leading_int(text: str) -> tuple[int, str]:
    value, index = 0, 0
    while index < len(text) and "0" <= text[index] <= "9":
        if value > 2**63 // 10:
            raise OverflowError
        value = value * 10 + ord(text[index]) - ord("0")
        if value > 2**63:
            raise OverflowError
        index += 1
    return value, text[index:]


def _leading_fraction(text: str) -> tuple[int, float, str]:
    value, scale, index, overflow = 0, 1.0, 0, False
    while index < len(text) and "0" <= text[index] <= "9":
        if not overflow:
            following = value * 10 + ord(text[index]) - ord("0")
            if value > MAX_INT64 // 10 or following > 2**63:
                overflow = True  # stops accumulating precision, no error
            else:
                value, scale = following, scale * 10
        index += 1
    return value, scale, text[index:]


def parse_duration_ns(text: str) -> int:
    """Go's ``time.ParseDuration``, in nanoseconds; raises ValueError with Go's message."""
    invalid = ValueError(f"time: invalid duration {go_quote(text)}")
    rest, negative = text, False
    if rest[:1] in ("-", "+"):
        negative, rest = rest[0] == "-", rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise invalid
    total = 0
    while rest:
        if not (rest[0] == "." or "0" <= rest[0] <= "9"):
            raise invalid
        before = len(rest)
        try:
            whole, rest = _leading_int(rest)
        except OverflowError:
            raise invalid from None
        pre = before != len(rest)
        fraction, scale, post = 0, 1.0, False
        if rest[:1] == ".":
            rest = rest[1:]
            before = len(rest)
            fraction, scale, rest = _leading_fraction(rest)
            post = before != len(rest)
        if not pre and not post:
            raise invalid
        index = 0
        while index < len(rest) and not (rest[index] == "." or "0" <= rest[index] <= "9"):
            index += 1
        if index == 0:
            raise ValueError(f"time: missing unit in duration {go_quote(text)}")
        unit_name, rest = rest[:index], rest[index:]
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise ValueError(f"time: unknown unit {go_quote(unit_name)} in duration {go_quote(text)}")
        if whole > 2**63 // unit:
            raise invalid
        whole *= unit
        if fraction > 0:
            whole += int(float(fraction) * (float(unit) / scale))  # Go: uint64(float64 product)
            if whole > 2**63:
                raise invalid
        total += whole
        if total > 2**63:
            raise invalid
    if negative:
        return -total
    if total > MAX_INT64:
        raise invalid
    return total


def seconds_to_ns_amd64(seconds: float) -> int:
    """``time.Duration(t * float64(time.Second))`` as amd64 computes it."""
    product = seconds * 1e9
    if not -(2.0**63) <= product < 2.0**63:
        return MIN_INT64  # out-of-range float64 -> int64: the "integer indefinite" value
    return int(product)  # truncation toward zero: below 1 ns is 0


def ns_to_seconds(ns: int) -> float:
    """The emulator's form: ``math.inf`` for Ollama's forever (max int64), else seconds."""
    return math.inf if ns == MAX_INT64 else ns / 1e9


def api_duration_ns(value: float | str) -> int:
    """``api.Duration.UnmarshalJSON`` for a number (seconds) or a string; negative = forever."""
    if isinstance(value, str):
        ns = parse_duration_ns(value)  # ValueError -> the handler's 400
        return MAX_INT64 if ns < 0 else ns
    if value < 0:
        return MAX_INT64
    return seconds_to_ns_amd64(value)


def env_keep_alive_ns(raw: str) -> int:
    """``envconfig.KeepAlive``: Var() trims spaces and quotes; duration, else int seconds, else 5m."""
    text = raw.strip().strip("\"'")
    ns = DEFAULT_KEEP_ALIVE_NS
    if text:
        try:
            ns = parse_duration_ns(text)
        except ValueError:
            try:
                seconds = _go_parse_int64(text)
            except ValueError:
                pass
            else:
                ns = (seconds * 10**9 + 2**63) % 2**64 - 2**63  # int64 multiplication wraps
    return MAX_INT64 if ns < 0 else ns


def _go_parse_int64(text: str) -> int:
    """``strconv.ParseInt(s, 10, 64)``: optional sign, ASCII digits only, within int64."""
    digits = text[1:] if text[:1] in "+-" else text
    if not digits or not all("0" <= ch <= "9" for ch in digits):
        raise ValueError(text)
    value = int(text)
    if not MIN_INT64 <= value <= MAX_INT64:
        raise ValueError(text)
    return value
