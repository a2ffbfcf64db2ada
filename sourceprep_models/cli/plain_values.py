"""Option values that need no conversion skip Typer's pydantic adapters.

Typer (0.26 and later) converts every parameter value through a pydantic ``TypeAdapter`` it builds on
first use (``typer.core._TyperParameter.get_runtime_param``, ``typer._coercion.build_runtime_param``):
even an option left unset, or a count that Click already made an int, imports pydantic and builds a
schema — about 100 ms of a `status` that should cost little more than starting Python. Typer offers no
switch for it (a ``parser=`` is wrapped in an adapter too). So each parameter gets a runtime converter
that returns a value already of the parameter's plain type (``str``, ``int``, ``float``, ``bool``,
optionally ``None``) as it is, and hands anything else — a string to turn into an int, a bounded
number, a path — to Typer's own converter, built only then: same results, same error messages.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

try:
    from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
    from typer.core import _TyperParameter
except ImportError:  # a Typer whose conversion is not built this way: leave it all to Typer
    RuntimeParam = object  # type: ignore[assignment,misc]
    _TyperParameter = None  # type: ignore[assignment,misc]

_PLAIN = (str, int, float, bool)


@dataclass(frozen=True)
class _PlainFirst(RuntimeParam):
    plain: type
    descriptor: TypeDescriptor

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        if type(value) is self.plain:
            return value
        typer_own = build_runtime_param(self.descriptor)
        param._runtime_param = typer_own  # converted by Typer from now on, as it would have been
        return typer_own._coerce_value(value, param=param, ctx=ctx)


def install(params: Iterable[Any]) -> None:
    """Give each plain-typed Typer parameter the converter above (others keep Typer's)."""
    if _TyperParameter is None:
        return
    for param in params:
        if not isinstance(param, _TyperParameter) or getattr(param, "_runtime_param", True) is not None:
            continue
        descriptor = param.type_descriptor
        plain = _plain_type(descriptor.annotation)
        info = descriptor.parameter_info
        bounded = info.min is not None or info.max is not None or info.parser is not None
        if plain is None or bounded or descriptor.file_annotation is not None or param.multiple or param.nargs != 1:
            continue
        param._runtime_param = _PlainFirst(
            parameter_info=info, annotation=descriptor.annotation, plain=plain, descriptor=descriptor
        )


def _plain_type(annotation: Any) -> type | None:
    """``str`` for ``str`` and ``str | None``; None for anything else."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        annotation = rest[0] if len(rest) == 1 else None
    return annotation if annotation in _PLAIN else None
