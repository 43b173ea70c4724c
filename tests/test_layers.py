"""No module imports from a layer above its own: the layers drawn in docs/architecture.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fakescope"

# (importer, imported), as paths under src/fakescope: today's breaks of the order, to be
# emptied as the code moves. Do not add to it; move the code instead.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def drawn_layers() -> list[tuple[str, list[str]]]:
    """(layer, its files and folders), lowest first, from the ```layers block of the doc."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    (block,) = re.findall(r"```layers\n(.*?)```", text, re.DOTALL)
    return [(line.split()[0], line.split()[1:]) for line in block.splitlines() if line.strip()]


def layer_of(path: str, layers: list[tuple[str, list[str]]]) -> int | None:
    for level, (_, members) in enumerate(layers):
        for member in members:
            if path == member or (member.endswith("/") and path.startswith(member)):
                return level
    return None


def module_path(dotted: str) -> str | None:
    """`fakescope.a.b` -> "a/b.py" or "a/b/__init__.py" (None if it is no module of ours)."""
    parts = dotted.split(".")[1:]
    for candidate in (
        Path(*parts).with_suffix(".py") if parts else None,
        Path(*parts, "__init__.py"),
    ):
        if candidate is not None and (PACKAGE / candidate).is_file():
            return candidate.as_posix()
    return None


def imports(path: Path) -> set[str]:
    """Our modules that `path` imports, anywhere in the file (function-level imports too)."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(relative.parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            # `from . import x` may name a submodule or an attribute of the package.
            targets = [
                f"{module}.{a.name}" if module_path(f"{module}.{a.name}") else module
                for a in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] == "fakescope")
    return {p for t in found if (p := module_path(t))}


def test_the_drawn_layers_are_the_documented_order_and_name_real_files():
    layers = drawn_layers()
    assert [name for name, _ in layers] == [
        "records",
        "media",
        "faces",
        "crops",
        "models",
        "explanations",
        "verdict",
        "reports",
        "interfaces",
    ]
    listed = [member for _, members in layers for member in members]
    assert len(listed) == len(set(listed))
    assert not [m for m in listed if not (PACKAGE / m).exists()], "the doc names a missing file"


def test_every_module_has_a_layer_and_imports_nothing_from_above():
    layers = drawn_layers()
    modules = {p.relative_to(PACKAGE).as_posix(): p for p in PACKAGE.rglob("*.py")}
    unplaced = sorted(m for m in modules if layer_of(m, layers) is None)
    assert not unplaced, f"add these to the layers in docs/architecture.md: {unplaced}"
    upward = {
        (module, target)
        for module, path in modules.items()
        for target in imports(path)
        if layer_of(target, layers) > layer_of(module, layers)
    }
    names = {
        (
            m,
            t,
        ): f"{m} ({layers[layer_of(m, layers)][0]}) imports {t} ({layers[layer_of(t, layers)][0]})"
        for m, t in upward
    }
    assert not upward - KNOWN_EXCEPTIONS, sorted(names[u] for u in upward - KNOWN_EXCEPTIONS)
    assert not KNOWN_EXCEPTIONS - upward, (
        f"fixed, remove from KNOWN_EXCEPTIONS: {KNOWN_EXCEPTIONS - upward}"
    )
