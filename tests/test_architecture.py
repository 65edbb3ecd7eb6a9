"""The package layering of docs/architecture.md, checked on the source: lower stages never import higher.

Every import of a ``stillmotion`` module counts, at module level or inside a function (a function-level
import hides a cycle from Python, not from this test).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "stillmotion"

# Lowest first. A package may import its own layer and any layer below it, never one above.
LAYERS = [
    {"errors", "progress"},
    {"io"},  # files in and out: pictures, videos, flow files, atomic outputs
    {"inputs"},  # image, arrows, mask
    {"motion"},  # dense fields, optical flow, strength, the Eulerian renderer
    {"sampling"},  # samplers over the denoiser interface: tensors only
    {"diffusion"},  # models, pipelines, denoisers, model hooks
    {"engines"},  # warp and diffusion engines: one animation from inputs to frames
    {"evaluation", "training"},
    {"api"},
    {"ui", "cli", "__init__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> list[tuple[str, int, str, str]]:
    """(file, line, importing package, imported package) for every stillmotion import in the source."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        importer = rel.parts[0] if len(rel.parts) > 1 else rel.stem  # a package, or api / __init__
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                continue  # relative imports stay inside a package
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name == "stillmotion" or name.startswith("stillmotion."):
                    found.append((str(rel), node.lineno, importer, _package(name)))
    return found


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    packages |= {p.stem for p in SRC.glob("*.py")}
    assert packages - set(LAYER) == set(), "a new package needs its place in LAYERS and docs/architecture.md"


def test_lower_stages_never_import_higher_ones():
    wrong = [f"{f}:{line}: {a} imports {b}" for f, line, a, b in _imports() if LAYER[b] > LAYER[a]]
    assert wrong == []


def test_the_check_sees_function_level_imports(tmp_path, monkeypatch):
    # A sampling module importing the engines inside a function must be caught.
    fake = tmp_path / "stillmotion"
    (fake / "sampling").mkdir(parents=True)
    (fake / "sampling" / "__init__.py").write_text("")
    (fake / "sampling" / "x.py").write_text("def f():\n    from stillmotion.engines import warp\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    with pytest.raises(AssertionError, match="sampling imports engines"):
        test_lower_stages_never_import_higher_ones()
