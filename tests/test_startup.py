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
