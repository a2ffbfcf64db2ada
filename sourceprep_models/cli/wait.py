"""`sourceprep-models wait`: block until the configured servers answer (a CI job whose server is starting)."""

from __future__ import annotations

import typer

from sourceprep_models.cli.options import EndpointOption, JsonOption, TimeoutOption

# The default wait: a server's cold start (Ollama, llama-server) takes seconds, a slow CI runner longer.
WAIT_TIMEOUT_S = 120.0


def wait(
    ctx: typer.Context,
    endpoint: EndpointOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Wait until every configured endpoint (or --endpoint) answers; exit 4 if one has not by --timeout (2m).

    Example: sourceprep-models wait --timeout 2m   (in CI, right after starting the server)
    """
    from sourceprep_models.cli.options import parse_timeout
    from sourceprep_models.swap.status import wait_until_answering

    app = ctx.obj
    timeout_s = parse_timeout(timeout) or WAIT_TIMEOUT_S
    result = wait_until_answering(app.config, app.endpoints(endpoint), timeout_s=timeout_s, hooks=app.hooks())
    if json_output:
        app.output.json(result.to_dict())
    app.output.success(f"{', '.join(result.answered_after_s)} answering")
