"""`run-pipeline`'s own options (kept apart so the command module stays a parser of a few lines)."""

from __future__ import annotations

from typing import Annotated

import typer

PrefetchOption = Annotated[
    bool, typer.Option("--prefetch/--no-prefetch", help="Warm the next model's weights while a stage works.")
]
OverlapOption = Annotated[
    bool,
    typer.Option(
        "--overlap/--no-overlap",
        help="Load the next stage's model while the current stage works, where both fit together.",
    ),
]
