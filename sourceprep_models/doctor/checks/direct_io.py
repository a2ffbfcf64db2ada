"""Servers that read weights with direct I/O (llama-server ``--load-mode dio``; Ollama on Linux with an
integrated CUDA/ROCm GPU): they bypass the page cache, so ``load``, ``bench`` and pipeline prefetch do not
warm their models, and doctor says so for the endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sourceprep_models.doctor.records import Check, ok

if TYPE_CHECKING:
    from sourceprep_models.config.schema import Endpoint


def check_direct_io(endpoint: Endpoint, reasons: Mapping[str, str | None]) -> Check | None:
    """One line naming the models (by name) that the endpoint's server reads with direct I/O; None: none does."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in reasons.items():
        if reason is not None:
            by_reason.setdefault(reason, []).append(name)
    if not by_reason:
        return None
    parts = [f"{', '.join(names)} ({reason})" for reason, names in by_reason.items()]
    models = [name for names in by_reason.values() for name in names]
    return ok(
        f"endpoint.{endpoint.name}.direct_io",
        f"direct I/O: {endpoint.name} reads {'; '.join(parts)} bypassing the page cache, so warming is skipped "
        "there (load, bench, pipeline prefetch)",
        models=models,
        reasons={name: reasons[name] for name in models},
    )
