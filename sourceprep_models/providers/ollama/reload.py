"""Whether a load with given options makes Ollama load a resident model again (ollama.md §4.7).

Ollama compares a request's runner options with the runner's (sched.go ``runnerRef.needsReload``,
``reflect.DeepEqual`` over ``api.Runner``) and reloads on any difference, with these exceptions:
any negative ``num_gpu`` in the request is automatic and matches any runner; an automatic context
or batch on both sides is not compared; an omitted ``use_mmap`` matches the one the scheduler chose
(``applyLlamaServerMmapDefaults``: ``false`` on a CPU-only runner). ``main_gpu`` is a pointer in
``api.Runner``, so unset and 0 differ; ``num_thread`` and ``draft_num_predict`` default to 0.

What the provider cannot know: ``/api/ps`` shows a runner's context and its VRAM share, not its
other options. Chosen: a runner is taken to run with Ollama's defaults, because Ollama's own
clients (``ollama run``, the official libraries) send no runner options. So an option that differs
from the default predicts a reload: if that runner was in fact loaded with the same options (by
this tool, earlier), the cost of the wrong guess is one needless page-cache warm read, while the
opposite guess would report "already loaded" for what is a full reload. The context is the core's
rule (``reloads_for_context``); an explicit ``num_batch`` predicts a reload because the batch an
automatic runner chose (512 to 2048, sched.go automaticGenerationBatch) is not shown.
"""

from __future__ import annotations

from collections.abc import Mapping

from sourceprep_models.providers.base import LoadedModel


def predicts_reload(options: Mapping[str, object], resident: LoadedModel) -> bool:
    """Whether ``options`` differ from those of a runner loaded with Ollama's defaults (see the module)."""
    num_gpu = options.get("num_gpu")
    if isinstance(num_gpu, int) and not isinstance(num_gpu, bool) and num_gpu >= 0:
        return True  # a negative one is automatic: never compared
    if "main_gpu" in options or "num_batch" in options:  # unset != 0; the automatic batch is not shown
        return True
    for key in ("num_thread", "draft_num_predict"):
        if options.get(key, 0) != 0:
            return True
    use_mmap = options.get("use_mmap")
    if use_mmap is None:
        return False
    # CPU-only (nothing in VRAM): the scheduler chose false, which an explicit false matches.
    cpu_only = resident.size_vram == 0
    return not (use_mmap is False and cpu_only)
