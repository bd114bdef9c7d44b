"""The import rules of the services, read from the source with ``ast`` (nothing is imported):

- no import cycle between modules under services/ (a cycle means two modules are one piece of design that was
  split in two, or an object passed around that should have been handed over explicitly);
- a domain module never reaches grpc or protobuf messages, not even through the voice_* modules it imports: the
  servicer maps messages to domain types, the domain only sees the latter;
- a domain package imports only itself and voice_common (its adapters import it, not the reverse).

Every import counts, also one inside a function or under ``TYPE_CHECKING``: an import moved into a function
still ties the two modules together.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SERVICES = Path(__file__).resolve().parent.parent / "services"

# Modules that must stay free of grpc and *_pb2, with everything they import from voice_*. A name covers the
# module and every module under it. Extend this as each service gets a domain package.
DOMAIN_MODULES = (
    "voice_profiles.domain",
    # voice_common's domain-level modules: what the services' domains build on.
    "voice_common.audio",
    "voice_common.cancellation",
    "voice_common.errors",
    "voice_common.model_download",
    "voice_common.object_store",
    "voice_common.prompt_keys",
    "voice_common.resource_ids",
    # The TTS service's domain: what a synthesis needs, behind its servicer.
    "voice_tts.duplex_session",
    "voice_tts.synthesis_engine",
    "voice_tts.synthesis_service",
    "voice_tts.synthesis_types",
    "voice_tts.voices",
)
FORBIDDEN_IN_DOMAIN = ("grpc", "google.rpc", "google.protobuf")
# Domain packages import only themselves and voice_common: the adapters (database, clients) and the servicer
# depend on the domain, never the reverse, and the domain states what it needs from them as protocols.
DOMAIN_PACKAGES = ("voice_profiles.domain",)
SHARED_PACKAGES = ("voice_common",)


def _source_roots() -> dict[str, Path]:
    """Top-level voice_* package name -> its directory (services/<svc>/voice_<svc>)."""
    return {
        package.name: package
        for package in sorted(SERVICES.glob("*/voice_*"))
        if package.is_dir() and (package / "__init__.py").exists()
    }


def _modules() -> dict[str, Path]:
    """Every voice_* module under services/, by dotted name (a package by its own name, from __init__.py)."""
    modules: dict[str, Path] = {}
    for top, directory in _source_roots().items():
        for path in directory.rglob("*.py"):
            parts = list(path.relative_to(directory).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([top, *parts])] = path
    return modules


def _imported_names(module: str, path: Path) -> Iterator[str]:
    """The full dotted name of everything ``module`` imports: ``from a.b import c`` gives ``a.b.c``, whether ``c``
    is a module or a name in one; relative imports are resolved."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                if not is_package:
                    package.pop()
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base]) if base else ".".join(package)
            for alias in node.names:
                yield f"{base}.{alias.name}"


def _module_of(name: str, modules: dict[str, Path]) -> str | None:
    """The module an imported name lives in: its longest prefix that is a voice_* module, None for others."""
    parts = name.split(".")
    for length in range(len(parts), 0, -1):
        candidate = ".".join(parts[:length])
        if candidate in modules:
            return candidate
    return None


def _import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the voice_* modules it imports. A package is not counted as importing its submodules unless
    its own code imports them (Python loads the parent first, but that is no design dependency)."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {_module_of(name, modules) for name in _imported_names(module, path)}
        graph[module] = {target for target in targets if target is not None and target != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted tuple."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[tuple[str, ...]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                lowlink[node] = min(lowlink[node], lowlink[target])
            elif target in on_stack:
                lowlink[node] = min(lowlink[node], index[target])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _is_under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_the_graph_sees_the_imports_it_must() -> None:
    # A guard on the parser itself: if these edges vanished, an empty cycle list would prove nothing.
    graph = _import_graph(_modules())
    assert "voice_profiles.domain.entities" in graph["voice_profiles.domain.samples"]
    assert "voice_profiles.servicer" in graph["voice_profiles.app"]
    assert "voice_common.errors" in graph["voice_profiles.domain.samples"]
    assert len(graph) > 50


def test_no_import_cycle_under_services() -> None:
    cycles = _cycles(_import_graph(_modules()))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(cycle) for cycle in cycles)


def _is_forbidden_in_domain(name: str) -> bool:
    return _is_under(name, FORBIDDEN_IN_DOMAIN) or any(
        part.endswith(("_pb2", "_pb2_grpc")) for part in name.split(".")
    )


def test_domain_modules_reach_no_grpc_or_protobuf_messages() -> None:
    modules = _modules()
    problems = []
    for start in sorted(module for module in modules if _is_under(module, DOMAIN_MODULES)):
        # Over the voice_* modules the domain module reaches, remembering how, for the message.
        paths = {start: [start]}
        pending = [start]
        while pending:
            current = pending.pop()
            for name in sorted(set(_imported_names(current, modules[current]))):
                target = _module_of(name, modules)
                if _is_forbidden_in_domain(name):
                    problems.append(f"{' -> '.join(paths[current])} imports {name}")
                elif target is not None and target not in paths:
                    paths[target] = [*paths[current], target]
                    pending.append(target)
    assert not problems, "domain modules reach grpc or protobuf messages:\n" + "\n".join(
        sorted(set(problems))
    )


def test_domain_packages_import_only_themselves_and_shared_code() -> None:
    modules = _modules()
    graph = _import_graph(modules)
    problems = [
        f"{module} imports {target}"
        for package in DOMAIN_PACKAGES
        for module in sorted(graph)
        if _is_under(module, (package,))
        for target in sorted(graph[module])
        if not _is_under(target, (package, *SHARED_PACKAGES))
    ]
    assert not problems, "domain modules import outside the domain:\n" + "\n".join(problems)
