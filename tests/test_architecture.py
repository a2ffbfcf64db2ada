"""The house rules, checked from the code: layer order, no import cycles, server knowledge only in
``providers/``, no probing of providers, modules of a readable size, thin commands.

Every import counts, including the ones inside functions and under ``TYPE_CHECKING``: a lazy import
that goes up the layers is still a dependency the layout hides.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "sourceprep_models"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Top to bottom; a module may import its own package and anything in a lower layer, never upward and never
# a sibling package of its own layer (that is how cycles start).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("cli",),
    ("ui",),
    ("doctor", "bench"),
    ("pipeline",),
    ("swap",),
    ("planning", "warming", "providers"),
    ("memory",),
    ("config", "hardware"),
    # paths and fs build on the leaf modules below them: paths names the app, fs raises SourceprepError.
    ("paths", "fs"),
    ("errors", "units", "constants", ""),
)
MAX_LINES = 600
MAX_CLI_LINES = 120
MAX_TOP_LEVEL_MODULES = 8
# What a command module may not reach for directly: it calls one core function and hands its record to ui/.
# (The providers package itself is the registry of kinds, which the config is checked against; its
# modules, one per server, are what a command must not touch.)
CLI_FORBIDDEN = ("planning", "swap.executor", "swap.residency", "providers.")
SERVER_KINDS = frozenset({"ollama", "lmstudio", "llamacpp", "llamaswap", "vllm", "omlx", "openai", "production-stack"})


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted, without the package prefix ("" for the package itself)
    target: str  # imported module or name, dotted, without the package prefix
    line: int


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def imports_of(source: str, module: str, *, is_package: bool) -> Iterator[Import]:
    """Every import of the package in a module's source, wherever it stands (functions, TYPE_CHECKING)."""
    prefix = PACKAGE + "."
    here = module.split(".") if module else []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(prefix):
                    yield Import(module, alias.name[len(prefix) :], node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                absolute = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module == PACKAGE:
                absolute = ""
            elif node.module and node.module.startswith(prefix):
                absolute = node.module[len(prefix) :]
            else:
                continue
            for alias in node.names:
                yield Import(module, f"{absolute}.{alias.name}".strip("."), node.lineno)


def resolve(target: str, modules: set[str]) -> str:
    """The module an import lands in: ``a.b.name`` is module ``a.b`` unless ``a.b.name`` is a module."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target


def layer_of(module: str) -> tuple[int, str]:
    top = module.split(".")[0] if module else ""
    for index, names in enumerate(LAYERS):
        if top in names:
            return index, top
    raise AssertionError(f"module {module!r} belongs to no layer; add its package to LAYERS in this test")


def upward_imports(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Violations of the layer order among ``{module: (source, is_package)}``, as readable lines."""
    modules = set(sources)
    problems = []
    for module, (source, is_package) in sources.items():
        mine, my_top = layer_of(module)
        for item in imports_of(source, module, is_package=is_package):
            target = resolve(item.target, modules)
            theirs, their_top = layer_of(target)
            if theirs < mine or (theirs == mine and their_top != my_top and their_top and my_top):
                problems.append(f"{module}:{item.line} imports {target} (layer {their_top!r} is not below {my_top!r})")
    return problems


def read_sources(root: Path = ROOT) -> dict[str, tuple[str, bool]]:
    return {
        name: (path.read_text(encoding="utf-8"), path.name == "__init__.py")
        for name, path in package_modules(root).items()
    }


def test_no_module_imports_up_the_layers() -> None:
    assert upward_imports(read_sources()) == []


def test_the_layer_check_catches_an_upward_import() -> None:
    sources = read_sources()
    planted = "from __future__ import annotations\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
    planted += "    from sourceprep_models.cli.app import main\n"
    sources["config.planted"] = (planted, False)
    lazy = "def later() -> None:\n    from sourceprep_models.swap import executor\n"
    sources["providers.planted"] = (lazy, False)
    sibling = "from sourceprep_models import bench\n"
    sources["doctor.planted"] = (sibling, False)
    problems = [line.split(" imports ")[0] for line in upward_imports(sources) if ".planted:" in line]
    assert problems == ["config.planted:4", "providers.planted:2", "doctor.planted:1"]


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    modules = set(sources)
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, (source, is_package) in sources.items():
        for item in imports_of(source, module, is_package=is_package):
            target = resolve(item.target, modules)
            if target != module:
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_counting_lazy_and_type_checking_imports() -> None:
    assert cycles(import_graph(read_sources())) == []


def test_the_cycle_check_finds_a_planted_cycle() -> None:
    sources = {
        "a": ("from sourceprep_models import b\n", False),
        "b": ("def f() -> None:\n    import sourceprep_models.a\n", False),
    }
    assert cycles(import_graph(sources)) == [["a", "b"]]


def test_no_module_is_over_the_size_limit() -> None:
    long = {
        name: count
        for name, path in package_modules().items()
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_package_root_holds_few_modules() -> None:
    top = sorted(path.name for path in ROOT.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_commands_are_thin() -> None:
    problems = []
    modules = set(package_modules())
    for name, path in package_modules().items():
        if not name.startswith("cli.") or name == "cli":
            continue
        source = path.read_text()
        if (count := len(source.splitlines())) > MAX_CLI_LINES:
            problems.append(f"{name}: {count} lines")
        for item in imports_of(source, name, is_package=False):
            module = resolve(item.target, modules)
            # "planning" forbids the package and its modules; "providers." only the modules inside.
            if any(module == bad or module.startswith(bad.rstrip(".") + ".") for bad in CLI_FORBIDDEN):
                problems.append(f"{name}:{item.line} imports {item.target}")
    assert problems == []


def _kind_comparisons(source: str) -> Iterator[int]:
    """Lines comparing something with a server-kind string (``== "ollama"``, ``in ("vllm", ...)``)."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        for operand in [node.left, *node.comparators]:
            constants = operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else [operand]
            if any(isinstance(item, ast.Constant) and item.value in SERVER_KINDS for item in constants):
                yield node.lineno


def test_server_kinds_are_compared_only_inside_providers() -> None:
    found = [
        f"{name}:{line}"
        for name, path in package_modules().items()
        if not name.startswith("providers")
        for line in _kind_comparisons(path.read_text())
    ]
    assert found == []


def test_the_kind_check_sees_a_comparison() -> None:
    assert list(_kind_comparisons('if endpoint.kind == "ollama":\n    pass\nx = kind in ("vllm", "omlx")\n')) == [1, 3]


def _provider_probes(source: str) -> Iterator[int]:
    """``getattr(<something provider>, ...)``: the base class declares every method the core calls."""
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        probe = node.func.id in ("getattr", "hasattr")
        if probe and node.args and "provider" in ast.unparse(node.args[0]).lower():
            yield node.lineno


def test_no_code_probes_a_provider_for_methods() -> None:
    found = [
        f"{name}:{line}" for name, path in package_modules().items() for line in _provider_probes(path.read_text())
    ]
    assert found == []


@pytest.mark.parametrize("source", ['getattr(session.provider, "always_ready", False)', "hasattr(provider, 'x')"])
def test_the_probe_check_sees_a_probe(source: str) -> None:
    assert list(_provider_probes(source)) == [1]
