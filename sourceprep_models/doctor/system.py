"""What doctor reads from the outside world, behind one Protocol (``DoctorSystem``) that tests replace:
the hardware, providers, raw GETs for detection, local server processes and the saved pipeline runs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from sourceprep_models.errors import SourceprepError
from sourceprep_models.providers.diagnostics import HttpReply, ServerProcess

if TYPE_CHECKING:
    import httpx

    from sourceprep_models.config.schema import Endpoint
    from sourceprep_models.hardware import Hardware, ProbeSystem
    from sourceprep_models.memory.sizing import SizeBook
    from sourceprep_models.providers.base import Provider


class DoctorSystem(Protocol):
    """Everything ``run_doctor`` reads from the outside world."""

    def hardware(self) -> Hardware: ...

    def provider(self, endpoint: Endpoint) -> Provider: ...

    def fetch(self, endpoint: Endpoint, path: str) -> HttpReply:
        """GET ``path`` on the endpoint's server root; raises ``ServerUnreachable`` when nothing answers."""
        ...

    def server_processes(self, kind: str) -> list[ServerProcess]:
        """Local processes of that server kind that hold its settings."""
        ...

    def stage_durations(self, pipeline: str) -> dict[str, float]:
        """Seconds per stage run of the pipeline's last saved run ({} when it never ran)."""
        ...

    def size_book(self) -> SizeBook: ...

    def close(self) -> None: ...


_API_SUFFIXES = ("/api/v1", "/api/v0", "/openai/v1", "/v1")


def server_root(url: str) -> str:
    root = url.rstrip("/")
    for suffix in _API_SUFFIXES:
        if root.endswith(suffix):
            return root[: -len(suffix)]
    return root


class ProcessTable(Protocol):
    def servers(self, kind: str) -> list[ServerProcess]: ...


class PsutilProcesses:
    """Local server processes of a kind (as its provider recognises them) and, where the OS allows,
    their environment."""

    def servers(self, kind: str) -> list[ServerProcess]:
        import psutil

        from sourceprep_models.providers import server_facts

        server = server_facts(kind)
        found = []
        for proc in psutil.process_iter(["pid", "name", "cmdline", "username"]):
            info = proc.info
            name = str(info.get("name") or "")
            cmdline = tuple(str(part) for part in info.get("cmdline") or ())
            if not server.is_server_process(name, cmdline):
                continue
            environ: dict[str, str] | None
            reason = None
            try:
                environ = dict(proc.environ())
            except psutil.AccessDenied:
                environ = None
                owner = info.get("username")
                reason = f"access denied: it runs as {owner}" if owner else "access denied"
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            found.append(ServerProcess(int(info["pid"]), name, cmdline, environ, reason))
        return found


class LocalSystem:
    """The real machine; ``probe_system`` and ``processes`` can be replaced by recorded outputs."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        probe_system: ProbeSystem | None = None,
        processes: ProcessTable | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.environ = environ if environ is not None else os.environ
        self.probe_system = probe_system
        self.processes = processes or PsutilProcesses()
        self.timeout_s = timeout_s
        self._clients: dict[str, httpx.Client] = {}

    def hardware(self) -> Hardware:
        from sourceprep_models.hardware import probe

        return probe(self.probe_system)

    def provider(self, endpoint: Endpoint) -> Provider:
        from sourceprep_models.providers import create_provider

        return create_provider(endpoint)

    def fetch(self, endpoint: Endpoint, path: str) -> HttpReply:
        from sourceprep_models.providers import secrets, server_facts
        from sourceprep_models.providers._http import json_body, send

        client = self._client(endpoint)
        response = send(
            client,
            "GET",
            path,
            where=f"endpoint {endpoint.name!r} at {endpoint.url}",
            unreachable_fix=server_facts(endpoint.kind).start_hint + ", or fix the endpoint's url",
            after_deadline="",
            # Checked (a key no header can carry is a config error naming its variable) and scrubbed as everywhere.
            headers=secrets.auth_headers(endpoint, self.environ) or None,
        )
        body = json_body(response)
        return HttpReply(response.status_code, body if body is not None else response.text)

    def _client(self, endpoint: Endpoint) -> httpx.Client:
        import httpx

        from sourceprep_models.providers._http import new_client

        if endpoint.name not in self._clients:
            self._clients[endpoint.name] = new_client(
                server_root(endpoint.url), httpx.Timeout(self.timeout_s, connect=3.0)
            )
        return self._clients[endpoint.name]

    def server_processes(self, kind: str) -> list[ServerProcess]:
        try:
            return self.processes.servers(kind)
        except Exception:  # psutil itself failing only means the settings are inferred
            return []

    def stage_durations(self, pipeline: str) -> dict[str, float]:
        from sourceprep_models.pipeline.state import load_state, state_path

        try:
            state = load_state(state_path(pipeline))
        except SourceprepError:
            return {}
        if state is None:
            return {}
        durations = {}
        for stage, row in state.finished.items():
            total = row.get("total_s") if isinstance(row, dict) else None
            if isinstance(total, int | float) and not isinstance(total, bool):
                durations[stage] = float(total)
        return durations

    def size_book(self) -> SizeBook:
        from sourceprep_models.memory.sizing import default_size_book

        return default_size_book()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
