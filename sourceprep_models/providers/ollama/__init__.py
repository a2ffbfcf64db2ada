"""Ollama: the provider (``provider``), the local model store (``store``), the server settings that make
models swap and their per-OS fixes (``settings``), and its prompt dialect (``prompts``)."""

from __future__ import annotations

from sourceprep_models.providers.ollama.provider import OllamaProvider

__all__ = ["OllamaProvider"]
