"""sourceprep-models: decide and drive which LLMs are resident on a machine's local model servers."""

__version__ = "0.1.0"
