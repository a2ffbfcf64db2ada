"""Names of every environment variable the tool reads, and the built-in defaults, in one place."""

from __future__ import annotations

APP_NAME = "sourceprep-models"

# Our own variables.
ENV_CONFIG = "SOURCEPREP_MODELS_CONFIG"
ENV_VERBOSE = "SOURCEPREP_MODELS_VERBOSE"
ENV_QUIET = "SOURCEPREP_MODELS_QUIET"
ENV_TIMEOUT = "SOURCEPREP_MODELS_TIMEOUT"

# Foreign variables we honour.
ENV_OLLAMA_HOST = "OLLAMA_HOST"
ENV_NO_COLOR = "NO_COLOR"
ENV_FORCE_COLOR = "FORCE_COLOR"
ENV_CI = "CI"

OLLAMA_DEFAULT_PORT = 11434
DEFAULT_ENDPOINT_NAME = "ollama"

# A preload must never be cut short by a read timeout (ollama.md §4.2/§4.9: a client that
# disconnects cancels the load), so the only bound is this overall deadline.
DEFAULT_LOAD_TIMEOUT_S = 600.0
# How long `unload` waits for the server to stop listing the model (busy models unload late, §4.6).
DEFAULT_UNLOAD_TIMEOUT_S = 120.0
# Connecting to a local server is fast or not happening.
CONNECT_TIMEOUT_S = 5.0
# Plain reads (/api/ps, /api/tags, /api/show) answer at once on a healthy server.
READ_TIMEOUT_S = 30.0
