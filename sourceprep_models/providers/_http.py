"""The transport-error translation every HTTP provider shares: one place turns httpx's failures
into the error hierarchy (connection refused → exit 4, deadline → exit 1 with the reason)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from sourceprep_models.constants import READ_TIMEOUT_S
from sourceprep_models.errors import DeadlineExceeded, ServerError, ServerUnreachable


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
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise ServerError(
            f"{where} dropped the connection during {method} {path} ({scrub(str(exc))}); it may have crashed, "
            f"{crash_hint}"
        ) from None
    except httpx.TransportError as exc:
        raise ServerUnreachable(f"cannot talk to {where}: {scrub(str(exc))}") from None
