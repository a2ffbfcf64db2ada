"""The group's commands, each built by Typer only when a run names it (or asks for the list with help)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer


class Commands(MutableMapping[str, Any]):
    """The group's commands by name, each built the first time it is looked up: Typer reads a command's
    whole signature (evaluating every annotation) to build it, and a run needs one command, not all of
    them (about 2 ms each, benchmarks/startup.py). Names and order are known without building anything."""

    def __init__(self, builders: dict[str, Callable[[], Any]]) -> None:
        self._builders = builders
        self._built: dict[str, Any] = {}

    @classmethod
    def of(cls, registry: typer.Typer, rich_markup_mode: Any, more: Mapping[str, Any]) -> Commands:
        """The commands registered on ``registry``, built as ``typer.main.get_group`` would build them
        for the app (same markup mode), followed by ``more`` (commands already built)."""
        from typer.main import get_command_from_info, get_command_name

        def builder(info: Any) -> Callable[[], Any]:
            return lambda: get_command_from_info(
                info, pretty_exceptions_short=registry.pretty_exceptions_short, rich_markup_mode=rich_markup_mode
            )

        builders = {
            info.name or get_command_name(getattr(info.callback, "__name__", "")): builder(info)  # typer's naming
            for info in registry.registered_commands
        }
        commands = cls(builders)
        for name, command in more.items():
            commands[name] = command
        return commands

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            self._built[name] = self._builders[name]()
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._builders[name] = lambda: command
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._builders[name]
        self._built.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)
