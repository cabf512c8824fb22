"""The package's layers: a lower layer never imports a higher one, and the top level stays small."""

import ast
import os

import pytest

import resnet_jax

PACKAGE = os.path.dirname(resnet_jax.__file__)
# Lowest first. `_torchvision` (imports nothing of the package) sits below everything; the command line
# and the package's own __init__ above everything.
LAYERS = ("models", "data", "weights", "training")
RANK = {"_torchvision": -1, **{name: i for i, name in enumerate(LAYERS)}}
TOP = len(LAYERS)


def _layer(module: str) -> int:
  """The rank of a dotted module of the package, e.g. 'resnet_jax.data.jpeg' -> 1."""
  parts = module.split(".")
  if parts[0] != "resnet_jax" or len(parts) == 1:
    return TOP
  return RANK.get(parts[1], TOP)


def _imports(path: str):
  """(line, module) of every `resnet_jax` import in a file, function-level ones included."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      if node.module == "resnet_jax":  # from resnet_jax import data, cli: each name is a module
        for alias in node.names:
          yield node.lineno, f"resnet_jax.{alias.name}"
      else:
        yield node.lineno, node.module


def _package_files():
  for dirpath, _, filenames in os.walk(PACKAGE):
    for name in sorted(filenames):
      if name.endswith(".py"):
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, os.path.dirname(PACKAGE))
        yield path, rel[:-3].replace(os.sep, ".").removesuffix(".__init__")


FILES = list(_package_files())


@pytest.mark.parametrize("path,module", FILES, ids=[m for _, m in FILES])
def test_no_upward_import(path, module):
  own = _layer(module)
  if own == TOP:
    return  # the command line, the recipes and the package's __init__ may import any layer
  upward = [f"line {line}: {name}" for line, name in _imports(path)
            if name.startswith("resnet_jax") and _layer(name) > own]
  assert not upward, f"{module} ({LAYERS[own] if own >= 0 else 'base'}) imports a higher layer: {upward}"


def test_the_rule_catches_an_upward_import(tmp_path):
  # The check itself: a models file importing training, even inside a function, is found.
  bad = tmp_path / "bad.py"
  bad.write_text("def f():\n  from resnet_jax.training import steps\n  from resnet_jax import data\n")
  names = [name for _, name in _imports(str(bad))]
  assert names == ["resnet_jax.training", "resnet_jax.data"]
  assert [_layer(n) > _layer("resnet_jax.models.resnet") for n in names] == [True, True]


def test_top_level_is_small():
  modules = [n for n in os.listdir(PACKAGE) if n.endswith(".py")]
  packages = sorted(n for n in os.listdir(PACKAGE)
                    if os.path.isfile(os.path.join(PACKAGE, n, "__init__.py")))
  assert len(modules) <= 8, modules
  assert set(LAYERS) <= set(packages), packages


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_says_what_it_may_import(layer):
  doc = ast.get_docstring(ast.parse(open(os.path.join(PACKAGE, layer, "__init__.py")).read()))
  assert doc and "import" in doc, f"resnet_jax/{layer}/__init__.py needs its one-paragraph docstring"
