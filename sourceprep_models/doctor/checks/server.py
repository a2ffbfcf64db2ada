"""What answers at an endpoint's URL: reachable, the server the config says, and able to do what the
config asks. Each kind of server is recognised by replies only it gives (servers.md §7), which its
provider class knows (``Provider.detect``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sourceprep_models.doctor.records import Check, ok, problem, warning
from sourceprep_models.errors import ServerUnreachable, SourceprepError
from sourceprep_models.providers.diagnostics import HttpReply, ServerIdentity

if TYPE_CHECKING:
    from sourceprep_models.config.schema import Endpoint
    from sourceprep_models.providers.base import Provider
    from sourceprep_models.providers.diagnostics import EndpointUses, Fetch


def identify(fetch: Fetch, configured: str) -> ServerIdentity:
    """Which server answers: the configured kind first, then the kinds that must be told apart before the
    others (``detect_first``: llama-swap mimics Ollama), then the rest in registry order.

    Raises ``ServerUnreachable`` (or the first error) when nothing answers at all."""
    from sourceprep_models.providers import provider_classes

    classes = provider_classes()
    ahead = [kind for kind, cls in classes.items() if cls.detect_first]
    order = list(dict.fromkeys([*([configured] if configured in classes else []), *ahead, *classes]))
    answered = False
    refused: list[int] = []

    def guarded(path: str) -> HttpReply:
        nonlocal answered
        try:
            reply = fetch(path)
        except SourceprepError:
            if not answered:
                raise  # refused or stuck on the first request: the next probes would fare no better
            return HttpReply(599, None)  # one route failing only rules that server out
        answered = True
        if reply.status in (401, 403):
            refused.append(reply.status)
        return reply

    for kind in order:
        found = classes[kind].detect(guarded)
        if found is not None:
            return found
    if refused:
        return ServerIdentity(
            None, facts={"refused": refused[0]}, evidence=f"it refused requests with HTTP {refused[0]}"
        )
    return ServerIdentity(None, evidence="none of the known servers' replies")


def check_reachable(endpoint: Endpoint, error: SourceprepError | None) -> Check:
    check_id = f"endpoint.{endpoint.name}.reachable"
    if error is None:
        return ok(check_id, f"answers at {endpoint.url}")
    details = {"exit_code": int(error.exit_code)}
    if isinstance(error, ServerUnreachable) and "; " in error.message:
        reason, fix = error.message.split("; ", 1)
        return problem(check_id, reason, fix, **details)
    # It answered something, or nothing in time: the server itself is in trouble.
    return problem(check_id, error.message, "check the server's log and restart it", **details)


def check_server(endpoint: Endpoint, identity: ServerIdentity) -> Check:
    from sourceprep_models.providers import server_facts, server_label

    check_id = f"endpoint.{endpoint.name}.server"
    details = {"detected": identity.kind, "version": identity.version, **identity.facts, "evidence": identity.evidence}
    server = server_facts(endpoint.kind)
    configured = server_label(endpoint.kind)
    if identity.kind is None:
        if server.accepts_any_server:  # the OpenAI protocol: no signature to look for
            return ok(check_id, "an OpenAI-compatible server", **details)
        if identity.facts.get("refused"):
            fix = (
                f"set api_key_env under [endpoints.{endpoint.name}] to the name of the environment variable that "
                "holds its API key" + (" (and check that variable)" if endpoint.api_key_env else "")
            )
        else:
            fix = f"check endpoints.{endpoint.name}.url; {server.start_hint}"
        return warning(
            check_id,
            f"something answers at {endpoint.url} but it does not look like {configured} ({identity.evidence})",
            fix,
            **details,
        )
    found = server_label(identity.kind)
    version = f" {identity.version}" if identity.version else ""
    if identity.kind == endpoint.kind:
        return ok(check_id, f"{found}{version} ({identity.evidence})", **details)
    if server.accepts_any_server:
        return warning(
            check_id,
            f"endpoint {endpoint.name!r} is kind {endpoint.kind} but the server is {found}{version}: its models "
            "cannot be loaded, unloaded or pinned that way",
            f'set kind = "{identity.kind}" under [endpoints.{endpoint.name}]',
            **details,
        )
    port = server.default_port
    elsewhere = f" (its default port is {port})" if port else ""
    if endpoint.source == "config":
        fix = (
            f'set kind = "{identity.kind}" under [endpoints.{endpoint.name}], or point its url at the {configured} '
            f"server{elsewhere}"
        )
    else:
        fix = (
            f"point OLLAMA_HOST at the Ollama server{elsewhere}, or add [endpoints.{endpoint.name}] with "
            f'kind = "{identity.kind}" and url = "{endpoint.url}" to the config'
        )
    return problem(
        check_id,
        f"the server at {endpoint.url} is {found}{version}, not {configured} as endpoint {endpoint.name!r} says",
        fix,
        **details,
    )


def check_supports(provider: Provider, identity: ServerIdentity, uses: EndpointUses) -> Check | None:
    """Whether this server (and version) can do what the config asks of it; None when another server answers."""
    endpoint = provider.endpoint
    if identity.kind != endpoint.kind:
        return None
    return Check.of(f"endpoint.{endpoint.name}.supports", provider.support(identity, uses))
