"""Stored data is never unpickled: no module of mvcstore can do it.

Every module under ``mvcstore/`` is parsed (not imported) and checked for the
ways Python code unpickles: importing pickle-based modules, ``torch.load``
without ``weights_only=True``, NumPy loads with ``allow_pickle=True``, and
``yaml.load`` without a safe loader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mvcstore

PACKAGE = Path(mvcstore.__file__).parent
PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve"}
PICKLING_MODULES |= {"joblib", "marshal"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def violations(source: str, where: str) -> list[str]:
    """Return every way ``source`` could unpickle, as ``where:line: what``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLING_MODULES:
                    found.append(f"{where}:{line}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            # an exception type (to catch torch's refusal) unpickles nothing
            if (node.module or "").split(".")[0] in PICKLING_MODULES and not all(
                alias.name.endswith("Error") for alias in node.names
            ):
                found.append(f"{where}:{line}: from {node.module} import")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if last == "load" and name.split(".")[0] == "torch":
                weights_only = _keyword(node, "weights_only")
                if not (
                    isinstance(weights_only, ast.Constant)
                    and weights_only.value is True
                ):
                    found.append(f"{where}:{line}: {name} without weights_only=True")
            if last in ("load", "loads", "Unpickler") and "pickle" in name:
                found.append(f"{where}:{line}: {name}")
            if last == "load" and name.split(".")[0] in ("np", "numpy"):
                allow = _keyword(node, "allow_pickle")
                if not (isinstance(allow, ast.Constant) and allow.value is False):
                    if allow is not None:
                        found.append(f"{where}:{line}: {name} with allow_pickle")
            if name in ("yaml.load", "yaml.load_all"):
                loader = _keyword(node, "Loader")
                if loader is None or "Safe" not in _dotted(loader):
                    found.append(f"{where}:{line}: {name} without a safe loader")
    return found


def test_no_module_of_mvcstore_can_unpickle() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found.extend(
            violations(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE)))
        )

    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "import pickle",
        "from pickle import loads",
        "import dill as d",
        "torch.load(path)",
        "torch.load(path, weights_only=False)",
        "import torch\ntorch.load(f, map_location='cpu')",
        "pickle.loads(data)",
        "np.load(path, allow_pickle=True)",
        "yaml.load(text)",
    ],
)
def test_the_checker_finds_each_way_to_unpickle(source: str) -> None:
    assert violations(source, "example") != []


@pytest.mark.parametrize(
    "source",
    [
        "torch.load(path, weights_only=True)",
        "from pickle import UnpicklingError",
        "np.load(path)",
        "np.load(path, allow_pickle=False)",
        "json.loads(text)",
        "yaml.load(text, Loader=yaml.SafeLoader)",
    ],
)
def test_the_checker_accepts_safe_loads(source: str) -> None:
    assert violations(source, "example") == []
