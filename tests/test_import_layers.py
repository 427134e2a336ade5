"""The package's import graph: layers import only downwards (API adapters -> pipeline and MCP ->
registry and store -> engines -> sampling), no module imports itself through others, and no API
family imports another."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mlxserve"
# Higher layers may import lower ones, never the reverse. Leaf helpers sit at the bottom.
LAYERS = {
    "cli": 5,
    "api": 4,
    "pipeline": 3,
    "media": 3,  # a request's images, read for pipeline/prepare.py in the pipeline's terms
    "mcp": 3,
    "net": 0,  # connections to the hosts a request may reach (MCP servers, remote images)
    "families": 3,
    "models": 2,
    "logstream": 2,  # the request log's bus: the pipeline publishes, api and cli subscribe
    "engine": 1,
    "sampling": 0,
}
LEAVES = {"gguf_header", "_blas", "environment", "checkpoints", "processes", "redact", "__init__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlxserve"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mlxserve"))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {target for target in imports_of(path) if target in modules and target != name}
        for name, path in modules.items()
    }


def layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] in LEAVES:
        return None
    return LAYERS[parts[1]]


def test_no_module_imports_a_higher_layer():
    upward = [
        (source, target)
        for source, targets in graph().items()
        for target in targets
        if None not in (layer(source), layer(target)) and layer(target) > layer(source)
    ]
    assert upward == []


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                return [*trail, module, target]
            if target not in state and (cycle := visit(target, [*trail, module])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(edges):
        if module not in state:
            assert visit(module, []) is None


# API families: each package under mlxserve/api/ speaks one wire format (ui: the web page). They
# share only api/http (HTTP plumbing) and api/shared (what several families use); no family
# imports another.
FAMILIES = {"openai", "responses", "anthropic", "lmstudio", "ollama", "ui"}
# (importing module, imported family) pairs allowed all the same, each with its reason.
FAMILY_IMPORTS_ALLOWED = {
    # /api/v0 is OpenAI's chat and text completions plus stats: it runs OpenAI's adapters with
    # `native_extras`, parses their request models and answers with their objects.
    ("mlxserve.api.lmstudio.v0", "openai"),
}


def family(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "api" and parts[2] in FAMILIES else None


def test_no_api_family_imports_another():
    crossing = {
        (source, family(target))
        for source, targets in graph().items()
        for target in targets
        if None not in (family(source), family(target)) and family(source) != family(target)
    }
    assert crossing - FAMILY_IMPORTS_ALLOWED == set()
    assert FAMILY_IMPORTS_ALLOWED - crossing == set(), "an allowed import no longer exists"
