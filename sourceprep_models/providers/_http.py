"""The transport-error translation every HTTP provider shares: one place turns httpx's failures
into the error hierarchy (connection refused → exit 4, deadline → exit 1 with the reason), with any
API key scrubbed from the texts it quotes (``providers.secrets``).

Two more things every HTTP client here shares: ``new_client`` builds a client without any TLS set-up
for a plain ``http://`` server, and ``looking`` makes the requests inside it a look (`status`,
`doctor`): short timeouts, and a server that does not answer is unreachable (exit 4)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from sourceprep_models.constants import CONNECT_TIMEOUT_S, READ_TIMEOUT_S
from sourceprep_models.errors import DeadlineExceeded, ServerError, ServerUnreachable, SourceprepError
from sourceprep_models.providers import secrets
from sourceprep_models.providers.base import Provider

if TYPE_CHECKING:
    import ssl

    from sourceprep_models.config.schema import Endpoint

# The look timeout (seconds) of the requests made in this context; None outside ``looking``.
_LOOK_S: ContextVar[float | None] = ContextVar("look_timeout_s", default=None)


@contextlib.contextmanager
def looking(seconds: float) -> Iterator[None]:
    """Requests made inside (in this thread) are a look, not a load: one that sets no timeout of its own
    gives up connecting, and waiting for each read, after ``seconds``; and a server that does not answer
    in time, or closes the connection without answering, is reported unreachable (exit 4) with the reason.
    A load keeps its own deadline: it sets one."""
    token = _LOOK_S.set(seconds)
    try:
        yield
    finally:
        _LOOK_S.reset(token)


def look_timeout() -> httpx.Timeout | None:
    """The timeout a request without its own uses here: the look's, else None (the client's default)."""
    seconds = _LOOK_S.get()
    return None if seconds is None else httpx.Timeout(seconds)


def new_client(base_url: str, timeout: httpx.Timeout) -> httpx.Client:
    """An HTTP client for one server. For a plain ``http://`` URL it skips the TLS set-up httpx does in
    every client (reading the whole CA bundle: tens of ms per client, the largest part of a `status`):
    its context has no CA certificates and still requires a verified certificate, so if anything ever
    made this client speak TLS the handshake would fail, never pass unverified. ``https://`` URLs get
    httpx's default verification, exactly as before."""
    if base_url.lower().startswith("http://"):
        return httpx.Client(base_url=base_url, timeout=timeout, verify=_no_ca_context())
    return httpx.Client(base_url=base_url, timeout=timeout)


def _no_ca_context() -> ssl.SSLContext:
    import ssl

    # PROTOCOL_TLS_CLIENT defaults to CERT_REQUIRED and check_hostname: verification stays on, with
    # nothing trusted.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _request(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    json: dict[str, Any] | None,
    headers: dict[str, str] | None,
    timeout: httpx.Timeout | None,
) -> httpx.Response:
    """The request, with a GET sent once more when the server closed the connection before answering.

    A kept-alive connection the server closes as its idle timeout ends (cpp-httplib, behind llama-server,
    closes after 5 s) can be picked from the pool just before the close reaches the client: the request
    then fails with "Server disconnected without sending a response" although the server is well, which
    happens to a process that waited for another one's swap lock. A GET changes nothing on the server, so
    it is safe to send again on a fresh connection; a POST (a load, an unload) is never repeated, and
    neither is a look (``status``, ``doctor``), which asks each server once and reports what it saw."""
    extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    try:
        return client.request(method, path, json=json, headers=headers, **extra)
    except httpx.RemoteProtocolError:
        if method != "GET" or _LOOK_S.get() is not None:
            raise
    return client.request(method, path, json=json, headers=headers, **extra)


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
    scrub: Callable[[str], str] = secrets.scrub,
    crash_hint: str = "check the server's log and retry",
) -> httpx.Response:
    """One request; ``after_deadline`` says what became of a load the client gave up on."""
    look_s = _LOOK_S.get() if timeout is None else None
    if look_s is not None:
        timeout = httpx.Timeout(look_s)
    try:
        return _request(client, method, path, json=json, headers=headers, timeout=timeout)
    except httpx.ConnectError:
        raise ServerUnreachable(f"cannot reach {where}; {unreachable_fix}") from None
    except httpx.ConnectTimeout:
        seconds = timeout.connect if timeout is not None and timeout.connect is not None else CONNECT_TIMEOUT_S
        raise ServerUnreachable(
            f"cannot reach {where}: connecting got no answer within {seconds:g}s; {unreachable_fix}"
        ) from None
    except httpx.TransportError as exc:
        # A look (status, doctor) that gets no answer in time calls the server unreachable; a load's read
        # timeout is its deadline; anything else is the one translation of transport errors.
        if look_s is not None and isinstance(exc, httpx.ReadTimeout | httpx.RemoteProtocolError | httpx.ReadError):
            raise _no_answer(exc, where=where, what=f"{method} {path}", seconds=look_s, scrub=scrub) from None
        if not isinstance(exc, httpx.ReadTimeout):
            raise transport_error(
                exc,
                where=where,
                unreachable_fix=unreachable_fix,
                what=f"{method} {path}",
                scrub=scrub,
                crash_hint=crash_hint,
            ) from None
        seconds = timeout.read if timeout is not None and timeout.read is not None else READ_TIMEOUT_S
        if action == "load":
            raise DeadlineExceeded(
                f"gave up after {seconds:g}s waiting for {model} to load on {where}; {after_deadline}; "
                "raise --timeout (or the endpoint's load_timeout)"
            ) from None
        raise DeadlineExceeded(f"{where} did not answer {method} {path} within {seconds:g}s; is it stuck?") from None


def _no_answer(
    exc: httpx.TransportError, *, where: str, what: str, seconds: float, scrub: Callable[[str], str]
) -> ServerUnreachable:
    """A look that got no answer: the server is there but does not answer, as far as a look can tell."""
    if isinstance(exc, httpx.ReadTimeout):
        return ServerUnreachable(
            f"{where} accepted the connection but did not answer {what} within {seconds:g}s; it may be stuck "
            "(restart it), or raise the endpoint's status_timeout if it is only slow"
        )
    return ServerUnreachable(
        f"{where} closed the connection without answering {what} ({scrub(str(exc)) or type(exc).__name__}); "
        "is something else listening on that port, or is the server crashing? check its log"
    )


def transport_error(
    exc: httpx.TransportError,
    *,
    where: str,
    unreachable_fix: str,
    what: str,
    scrub: Callable[[str], str] = secrets.scrub,
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
    """The start of a reply, quoted, for "did not answer like X" messages; scrubbed before it is cut, or a
    quoted key would leave in pieces."""
    return repr(secrets.scrub(str(body))[:80])


def int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def strip_api_base(url: str, suffixes: tuple[str, ...] = ("/v1",)) -> str:
    """The server's root URL, whether the config gave the root or one of its API bases."""
    root = url.rstrip("/")
    for suffix in suffixes:
        if root.endswith(suffix):
            return root[: -len(suffix)]
    return root


class HTTPEndpoint(Provider):
    """What every HTTP provider shares: how it names its endpoint in messages, how it sends a
    request (one translation of transport errors, ``send``), and how it keeps its API key out of
    both: the key is read from the environment variable the endpoint names (``api_key_env``) at each
    use, never stored, and any server text that echoes it is scrubbed before it reaches a message."""

    endpoint: Endpoint
    _client: httpx.Client
    _root: str
    server_label: ClassVar[str]  # "LM Studio", "vLLM", …
    server_noun: ClassVar[str]  # "an LM Studio server", …
    unreachable_fix: ClassVar[str]  # how to start the server
    after_deadline: ClassVar[str] = "it may still finish loading (check `sourceprep-models status`)"

    def _connect(self, endpoint: Endpoint, client: httpx.Client | None, root: str) -> None:
        """Set the endpoint and its client; the key is added per request (``_headers``), never stored on it."""
        self.endpoint = endpoint
        self._root = root
        self._client = client or new_client(root, httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self.endpoint.name!r}, url={self.endpoint.url!r})"

    def close(self) -> None:
        self._client.close()

    def _where(self) -> str:
        return f"{self.server_label} at {self.endpoint.url} (endpoint {self.endpoint.name!r})"

    def _secret(self) -> str | None:
        return secrets.api_key(self.endpoint)

    def _scrub(self, text: str) -> str:
        return secrets.scrub(text)

    def _headers(self, path: str) -> dict[str, str]:
        secret = self._secret()
        return {"Authorization": f"Bearer {secret}"} if secret else {}

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        model: str | None = None,
        timeout: httpx.Timeout | None = None,
        action: str = "request",
    ) -> httpx.Response:
        where = self._where()
        try:
            return send(
                self._client,
                method,
                path,
                where=where,
                unreachable_fix=f"{self.unreachable_fix}, or point the endpoint's url at the right host:port",
                after_deadline=self.after_deadline,
                json=json,
                headers=self._headers(path) or None,
                timeout=timeout,
                model=model or (str(json["model"]) if json and "model" in json else None),
                action=action,
                scrub=self._scrub,
                crash_hint=f"check {self.server_label}'s log and retry",
            )
        except (UnicodeEncodeError, httpx.LocalProtocolError) as exc:
            # The key was checked when the headers were built (``secrets.api_key``); this is anything else.
            raise ServerError(f"could not send {method} {path} to {where}: {self._scrub(str(exc))}") from None

    def _unexpected(self, path: str, body: object) -> ServerError:
        """A reply of the wrong shape: never trust a bare 200 (servers.md §7)."""
        return ServerError(
            f"{self.endpoint.url}{path} did not answer like {self.server_label} ({snippet(self._scrub(str(body)))}); "
            f"is endpoint {self.endpoint.name!r} really {self.server_noun}?"
        )
