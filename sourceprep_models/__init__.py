"""sourceprep-models: decide and drive which LLMs are resident on a machine's local model servers.

Data flows one way, and the package layout shows it::

    cli (parse) --> swap.operations / pipeline / doctor / bench --> swap.residency (the machine: every
    server, one budget) --> planning (pure) --> swap.executor (all server I/O, in order) --> result
    record --> ui (format)

Layers, top to bottom. A module imports its own package and lower layers only (lazy and
``TYPE_CHECKING`` imports included); ``tests/test_architecture.py`` enforces it::

    __main__
    cli/                    Typer only: parse, call ONE core function, hand its record to ui/
    ui/                     output.py (stdout/stderr, TTY rules) and render/ (tables from records)
    doctor/  bench.py       diagnosis and measurement (they read pipelines; never each other)
    pipeline/               stages, the whole-run plan, run state, report, run, work
    swap/                   the only code that orders server I/O: residency, operations, executor,
                            pins, locks, status
    planning/ warming/ providers/
                            pure planners | page-cache warming | one module or package per server
    memory/                 GGUF header, memory formula, predictions, budget
    config/ hardware/       TOML -> typed records | the RAM/GPU probe
    errors units constants paths fs
"""

__version__ = "0.1.0"
