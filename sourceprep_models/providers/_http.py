"""The transport-error translation every HTTP provider shares: one place turns httpx's failures
into the error hierarchy (connection refused → exit 4, deadline → exit 1 with the reason)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from sourceprep_models.constants import READ_TIMEOUT_S
from sourceprep_models.errors import DeadlineExceeded, ServerError, ServerUnreachable, SourceprepError


def send(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    where: str,
    unreachable_fix: str,
    after_deadline: str,
    json: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout: httpx.Timeout | None = None,
    model: str | None = None,
    action: str = "request",
    scrub: Callable[[str], str] = str,
    crash_hint: str = "check the server's log and retry",
) -> httpx.Response:
    """One request; ``after_deadline`` says what became of a load the client gave up on."""
    try:
        if timeout is None:
            return client.request(method, path, json=json, headers=headers)
        return client.request(method, path, json=json, headers=headers, timeout=timeout)
    except (httpx.ConnectError, httpx.ConnectTimeout):
        raise ServerUnreachable(f"cannot reach {where}; {unreachable_fix}") from None
    except httpx.ReadTimeout:
        seconds = timeout.read if timeout is not None and timeout.read is not None else READ_TIMEOUT_S
        if action == "load":
            raise DeadlineExceeded(
                f"gave up after {seconds:g}s waiting for {model} to load on {where}; {after_deadline}; "
                "raise --timeout (or the endpoint's load_timeout)"
            ) from None
        raise DeadlineExceeded(f"{where} did not answer {method} {path} within {seconds:g}s; is it stuck?") from None
    except httpx.TransportError as exc:
        raise transport_error(
            exc,
            where=where,
            unreachable_fix=unreachable_fix,
            what=f"{method} {path}",
            scrub=scrub,
            crash_hint=crash_hint,
        ) from None


def transport_error(
    exc: httpx.TransportError,
    *,
    where: str,
    unreachable_fix: str,
    what: str,
    scrub: Callable[[str], str] = str,
    crash_hint: str = "check the server's log and retry",
) -> SourceprepError:
    """The one-line error for a failed exchange that is not a load deadline (see ``send``)."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ServerUnreachable(f"cannot reach {where}; {unreachable_fix}")
    if isinstance(exc, httpx.TimeoutException):
        return DeadlineExceeded(f"{where} did not answer {what} in time; is it stuck?")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return ServerError(
            f"{where} dropped the connection during {what} ({scrub(str(exc))}); it may have crashed, {crash_hint}"
        )
    return ServerUnreachable(f"cannot talk to {where}: {scrub(str(exc))}")


# -- reading replies: shared by every provider so each parses error bodies the same way --------------


def json_body(response: httpx.Response) -> Any:
    """The reply's JSON, or None when it is empty or not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def error_message(body: object) -> str | None:
    """The error text of ``{"error": "…"}`` or OpenAI's ``{"error": {"type", "code", "message"}}``, else None."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        parts = [str(error[key]) for key in ("type", "code", "message") if isinstance(error.get(key), str)]
        return ": ".join(dict.fromkeys(parts)) or str(error)
    return None


def snippet(body: object) -> str:
    """The start of a reply, quoted, for "did not answer like X" messages."""
    return repr(str(body)[:80])


def int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
