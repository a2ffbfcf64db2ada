"""A table that never cuts a figure, a name or a status.

Columns are of two sorts: *prose* (notes, details, fixes, lists of names) may wrap onto more lines;
every other column keeps its widest cell whole. When even that does not fit the terminal (a 60-column
pane), each row is printed as a small block of "HEADER value" lines instead of a cut table. In a pipe
the output layer's console is wide, so scripts always get plain rows, one per line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.table import Table
    from rich.text import Text

# Headers whose cells are prose or lists of names: they wrap between words (never inside one, so a name is
# never cut) rather than push the figures out.
PROSE = frozenset({"NOTE", "DETAIL", "DETAIL / FIX", "EVICT", "RESIDENT", "ACTION", "PREFETCH"})
# Figures read best right-aligned.
RIGHT = frozenset(
    {
        "SIZE",
        "CONTEXT",
        "WALL",
        "SERVER",
        "TOTAL",
        "BEFORE",
        "AFTER",
        "UNLOAD",
        "LOAD",
        "WORK",
        "TTFT",
        "TOK/S",
        "PREDICTED",
    }
)
# Space between two columns of a borderless rich table (padding of one on each side).
GAP = 2


@dataclass
class FlexTable:
    headers: tuple[str, ...]
    rows: list[tuple[tuple[str, ...], str | None]] = field(default_factory=list)

    def add_row(self, *cells: str, style: str | None = None) -> None:
        self.rows.append((tuple(cells), style))

    def needed_width(self) -> int:
        """The narrowest terminal that shows every non-prose cell whole, with some room for the prose."""
        from rich.cells import cell_len

        total = GAP * (len(self.headers) - 1)
        for index, header in enumerate(self.headers):
            column = [cells[index] for cells, _ in self.rows]
            if header in PROSE:  # as wide as its longest word: wrapped between words, nothing is cut
                total += max([cell_len(header), *(cell_len(word) for cell in column for word in cell.split())])
            else:
                total += max([cell_len(header), *(cell_len(cell) for cell in column)])
        return total

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.needed_width() <= options.max_width:
            yield self._table()
        else:
            yield from self._stacked()

    def _table(self) -> Table:
        from rich.cells import cell_len
        from rich.table import Table

        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False, show_edge=False)
        for index, header in enumerate(self.headers):
            if header in PROSE:
                table.add_column(header, no_wrap=False, overflow="fold")
            else:
                widest = max([cell_len(header), *(cell_len(cells[index]) for cells, _ in self.rows)])
                justify = "right" if header in RIGHT else "left"
                table.add_column(header, justify=justify, no_wrap=True, min_width=widest)  # type: ignore[arg-type]
        for cells, style in self.rows:
            table.add_row(*cells, style=style)
        return table

    def _stacked(self) -> Iterator[Text | Table]:
        """Each row as a block: the first cell as its title, then "HEADER value" for every non-empty cell,
        values wrapping under themselves."""
        from rich.table import Table
        from rich.text import Text

        for number, (cells, style) in enumerate(self.rows):
            if number:
                yield Text("")
            yield Text(f"{self.headers[0]} {cells[0]}", style=style or "bold")
            block = Table.grid(padding=(0, 2), pad_edge=False)
            block.add_column(no_wrap=True)
            block.add_column(overflow="fold")
            for header, cell in zip(self.headers[1:], cells[1:], strict=True):
                if cell:
                    block.add_row(f"  {header}", cell, style=style)
            yield block


def flex_table(headers: Iterable[str]) -> FlexTable:
    return FlexTable(tuple(headers))
