"""Pure planning: plain records in, a plan out; no I/O, nothing from the package but ``units`` and ``errors``.

- ``load``: what leaves memory so one model can come in (``plan_load``);
- ``lookahead``: a whole pipeline's loads and evictions at once, and the baseline strategies (``plan_pipeline``),
  built from ``records``, ``caps`` (a server's cap on loaded models), ``pins`` (which pins stay, per stage),
  ``problem`` (the unpinned part), ``strategies`` (the lazy plays), ``search`` (exact search and beam) and
  ``exact`` (the exact search made to scale with the number of stages).
"""
