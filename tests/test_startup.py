"""Start-up work `status` must not do: no TLS set-up for a plain http:// server (httpx would read the
whole CA bundle for every client), while https:// keeps httpx's verification exactly; and no pydantic
(Typer builds a pydantic adapter for every option it converts) on the way to a status."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

from tests.conftest import WriteConfig
from tests.loopback import Reply, Request, serve

HANG_GUARD_S = 120


def ollama(request: Request) -> Reply:
    if request.path.startswith("/api/ps"):
        return 200, {"models": []}
    return 404, {"error": "not found"}


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sourceprep_models", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )


def test_status_over_http_never_reads_the_ca_bundle(write_config: WriteConfig, tmp_path: Path) -> None:
    # httpx reads SSL_CERT_FILE when it sets up TLS; a path that cannot be read fails any client that does.
    unreadable = str(tmp_path / "no-such-ca-bundle.pem")
    with serve(ollama) as url:
        path = write_config(f'[endpoints.a]\nkind = "ollama"\nurl = "{url}"\n')
        result = run("--config", str(path), "status", "--json", "--no-hardware", env={"SSL_CERT_FILE": unreadable})

    assert result.returncode == 0, result.stderr
    assert [(endpoint["name"], endpoint["ok"]) for endpoint in json.loads(result.stdout)["endpoints"]] == [("a", True)]
    assert result.stderr == ""


def test_an_https_client_still_verifies_with_the_ca_bundle() -> None:
    import httpx

    from sourceprep_models.providers._http import new_client

    with new_client("https://api.example.com", timeout=httpx.Timeout(1.0)) as client:
        context = client._transport._pool._ssl_context  # type: ignore[attr-defined]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # the CA bundle is loaded


def test_an_http_client_would_refuse_unverified_tls() -> None:
    import httpx

    from sourceprep_models.providers._http import new_client

    with new_client("http://127.0.0.1:9", timeout=httpx.Timeout(1.0)) as client:
        context = client._transport._pool._ssl_context  # type: ignore[attr-defined]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 0  # nothing trusted: any TLS handshake fails


def test_status_imports_no_pydantic(write_config: WriteConfig) -> None:
    code = (
        "import sys\n"
        "from sourceprep_models.cli.app import app\n"
        "try:\n"
        "    app(sys.argv[1:], prog_name='sourceprep-models')\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code, 'pydantic' in sys.modules, file=sys.stderr)\n"
    )
    with serve(ollama) as url:
        path = write_config(f'[endpoints.a]\nkind = "ollama"\nurl = "{url}"\n')
        result = subprocess.run(
            [sys.executable, "-c", code, "--config", str(path), "-v", "status", "--json", "--no-hardware"],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD_S,
            check=False,
        )
    assert result.stderr.splitlines()[-1] == "exit 0 False", result.stderr
    assert json.loads(result.stdout)["endpoints"][0]["ok"] is True


# What a plain `status` never needs: the planner, the executor and the swap operations (imported by a load,
# an unload, a pin or `status --repair`), the GGUF memory formula, and Typer's build of the commands the
# run does not name.
LOOK_ONLY_CODE = (
    "import sys\n"
    "import typer.main\n"
    "from sourceprep_models.cli.app import app\n"
    "group = typer.main.get_command(app)\n"
    "try:\n"
    "    group.main(sys.argv[1:], prog_name='sourceprep-models')\n"
    "except SystemExit as exc:\n"
    "    print('exit', exc.code, file=sys.stderr)\n"
    "heavy = ('sourceprep_models.planning', 'sourceprep_models.swap.executor', 'sourceprep_models.swap.operations',\n"
    "         'sourceprep_models.memory.formula')\n"
    "print('imported', sorted(m for m in sys.modules if m.startswith(heavy)), file=sys.stderr)\n"
    "built = getattr(group.commands, '_built', group.commands)  # a plain dict: every command built\n"
    "print('built', [name for name in group.commands if name in built], file=sys.stderr)\n"
)


def look_only(*args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", LOOK_ONLY_CODE, *args], capture_output=True, text=True, timeout=HANG_GUARD_S, check=False
    )
    return result.stderr.splitlines()[-3:]


def test_status_starts_without_the_planner_the_executor_or_the_other_commands(write_config: WriteConfig) -> None:
    with serve(ollama) as url:
        path = write_config(f'[endpoints.a]\nkind = "ollama"\nurl = "{url}"\n')
        assert look_only("--config", str(path), "status", "--json", "--no-hardware") == [
            "exit 0",
            "imported []",
            "built ['status']",
        ]
        # A repair may reload pins: only then are the planner and the executor imported.
        exit_line, imported, built = look_only("--config", str(path), "status", "--repair", "--no-hardware")
    assert exit_line == "exit 0"
    assert "sourceprep_models.swap.executor" in imported and "sourceprep_models.planning.load" in imported
    assert built == "built ['status']"


def test_help_still_lists_every_command() -> None:
    *_, built = look_only("--help")
    assert built == "built ['status', 'load', 'unload', 'pin', 'run-pipeline', 'doctor', 'bench', 'wait']"
