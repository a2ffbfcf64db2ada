"""`doctor`: find the setups that make models swap (or crawl) silently, and say exactly what to change.

Each check is a small function from plain data (config records, the hardware record, what a server
answered) to one ``Check`` record (``records``): ok, warning, problem or skipped, a one-line
summary, a one-line fix for anything not ok, and details for ``--json``. ``run.run_doctor`` gathers
that data through a ``DoctorSystem`` (``system``: the hardware probe, providers, raw GETs for
detection, the local server processes, the saved pipeline runs), so tests drive every branch from
recorded outputs. The checks live in ``checks/`` by subject; ``endpoint`` runs those of one endpoint.

What doctor relies on and the traps it avoids (section numbers: servers.md, ollama.md, hardware.md):

- Detection, servers.md §7: a port may not hold what the config claims, and a bare 200 proves
  nothing (LM Studio answers unknown routes with 200 and an error body, §1.3). Each server is
  recognised by a reply only it gives; each provider class knows its own (``Provider.detect``).
- A server's own settings (Ollama's environment, llama-server's ``--models-max``) and what its
  version supports are the provider's knowledge too (``Provider.settings_findings``,
  ``Provider.support``): doctor never asks which kind of server it talks to.
- Apple Silicon: the GPU may use only Metal's working set, 2/3 of RAM up to 32 GB and 3/4 above
  by default; ``iogpu.wired_limit_mb`` raises it (hardware.md §1.2). It matters only when what
  the config keeps together does not fit the working set but would fit the raised one.
- Doctor never changes anything: it does not repair pins or load models (``status`` does that).
"""
