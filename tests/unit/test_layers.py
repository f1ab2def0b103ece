"""The layer rule of STYLE.md section 1: imports point down, drivers stay home.

Every module under ``mvcstore/`` is parsed (not imported) and each import of
another mvcstore module is checked against the layer table; third-party drivers
may be imported only by the module that owns them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mvcstore

PACKAGE = Path(mvcstore.__file__).parent

# layer of each module or package, by dotted name below ``mvcstore``
LAYERS: dict[str, int] = {
    "errors": 0,
    "native": 0,
    "_kernels": 0,
    "codec": 1,
    "encodings": 1,
    "objects": 2,
    "arrays": 2,
    "stfile": 2,
    "stores": 3,
    "refs": 4,
    "lineage": 5,
    "metrics": 6,
    "repo": 7,
    "diff": 7,
    "gc": 7,
    "repair": 7,
    "remote": 7,
    "torch": 8,
    "dashboard": 8,
    "cli": 9,
    "__main__": 9,
}

# ``mvcstore/__init__.py`` re-exports the repository API, so importing the
# package itself reaches the repo layer
FACADE_LAYER = LAYERS["repo"]

# third-party top-level packages, and the only modules allowed to import them
DRIVERS: dict[str, tuple[str, ...]] = {
    "pymongo": ("mvcstore.stores.mongo",),
    "bson": ("mvcstore.stores.mongo",),
    "gridfs": ("mvcstore.stores.mongo",),
    "google": ("mvcstore.stores.gcs",),
    "elasticsearch": ("mvcstore.metrics.elastic",),
    "opensearchpy": ("mvcstore.metrics.elastic",),
    "opensearch": ("mvcstore.metrics.elastic",),
    "torch": ("mvcstore.torch",),
    "matplotlib": ("mvcstore.dashboard.plot",),
    "plotly": ("mvcstore.dashboard.plot",),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int | None:
    """Return the layer of ``mvcstore.X...``, None for the package itself."""
    parts = module.split(".")
    if parts == ["mvcstore"]:
        return None
    return LAYERS.get(parts[1], -1)


def _imports(source: str, module: str, *, is_package: bool) -> list[tuple[int, str]]:
    """Return (line, absolute module name) of every import in ``source``."""
    found: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # ``from mvcstore import repo`` imports the module repo
            found.extend(
                (node.lineno, f"{target}.{alias.name}")
                for alias in node.names
                if target == "mvcstore"
            )
    return found


def _violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    own = _layer(module)
    out: list[str] = []
    for line, target in _imports(source, module, is_package=is_package):
        top = target.split(".")[0]
        if top == "mvcstore":
            if own is None:
                continue
            theirs = FACADE_LAYER if target == "mvcstore" else _layer(target)
            if theirs is not None and theirs > own:
                out.append(
                    f"{module}:{line} (layer {own}) imports {target} (layer {theirs})"
                )
        elif top in DRIVERS:
            owners = DRIVERS[top]
            if not any(module == o or module.startswith(o + ".") for o in owners):
                out.append(f"{module}:{line} imports {top}, allowed only in {owners}")
    return out


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    unknown = [
        _module_name(path) for path in _sources() if _layer(_module_name(path)) == -1
    ]

    assert unknown == [], "add these modules to the layer table in STYLE.md"


def test_no_module_imports_a_higher_layer_or_a_foreign_driver() -> None:
    found = []
    for path in _sources():
        found.extend(
            _violations(
                path.read_text(encoding="utf-8"),
                _module_name(path),
                is_package=path.name == "__init__.py",
            )
        )

    assert found == []


def test_module_names_follow_the_file_layout() -> None:
    assert len(_sources()) >= 12
    assert _module_name(PACKAGE / "stores" / "local.py") == "mvcstore.stores.local"
    assert _module_name(PACKAGE / "__init__.py") == "mvcstore"


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("mvcstore.codec", "from mvcstore.objects import Blob"),
        ("mvcstore.errors", "import mvcstore.codec"),
        ("mvcstore.objects", "from mvcstore import repo"),
        ("mvcstore.lineage", "from mvcstore import ObjectId"),
        ("mvcstore.stores.local", "from ..refs import check_name"),
        ("mvcstore.metrics.sqlite", "from mvcstore.repo import Repo"),
        ("mvcstore.repo", "def f():\n    from mvcstore.cli import main\n"),
        ("mvcstore.torch.tensors", "from mvcstore.cli.main import main"),
        ("mvcstore.repo", "import torch"),
        ("mvcstore.arrays", "from torch import Tensor"),
        ("mvcstore.stores.local", "import pymongo"),
        ("mvcstore.stores.gcs", "from bson import ObjectId"),
        ("mvcstore.stores.mongo", "from google.cloud import storage"),
        ("mvcstore.repo", "import elasticsearch"),
        ("mvcstore.metrics.sqlite", "from opensearchpy import OpenSearch"),
    ],
)
def test_checker_reports_a_violation(module: str, source: str) -> None:
    assert _violations(source, module) != []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("mvcstore.repo", "from mvcstore.stores.base import ObjectStore"),
        ("mvcstore.arrays", "from mvcstore.objects import dtype_size"),
        ("mvcstore.stores.local", "from .base import EpochEntry"),
        ("mvcstore.metrics", "from .base import MetricDoc"),
        ("mvcstore.cli.main", "from mvcstore.torch import capture"),
        ("mvcstore.cli.main", "from mvcstore import Repo"),
        ("mvcstore.torch.tensors", "import torch\nfrom mvcstore.repo import Repo"),
        ("mvcstore.stores.mongo", "import pymongo\nfrom bson import Binary"),
        ("mvcstore.stores.gcs", "from google.cloud import storage"),
        ("mvcstore.metrics.elastic", "import elasticsearch"),
        ("mvcstore.codec", "import msgpack\nimport blake3"),
    ],
)
def test_checker_accepts_a_downward_import(module: str, source: str) -> None:
    is_package = module == "mvcstore.metrics"
    assert _violations(source, module, is_package=is_package) == []
