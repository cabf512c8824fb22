"""The training recipes, one `get_config()` per module (`resnet-jax train --config NAME`).

They ship inside the package so that an installed wheel can train; the top-level `configs/*.py` of a
checkout are shims that re-export these (`python train.py --config configs/NAME.py`).

This module also loads a config by recipe name or file (`load_config`) and sets a key from a
command line's text (`apply_override`); resnet_jax/cli.py parses the command line itself.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import os
import pkgutil


class UsageError(ValueError):
  """A bad command line or config file name; printed as one line."""


def recipes() -> list[str]:
  """The recipe names `--config` accepts (the modules of `resnet_jax.configs`)."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load_config(spec: str):
  """The locked config of a recipe name or of a config file's `get_config()`.

  Raises:
    UsageError: no such recipe or file (with the closest recipe names).
  """
  if not spec.endswith(".py") and os.sep not in spec:
    if spec not in recipes():
      close = difflib.get_close_matches(spec, recipes(), n=3)
      hint = f"did you mean {' or '.join(close)}? " if close else ""
      raise UsageError(f"--config {spec}: no such recipe ({hint}recipes: {', '.join(recipes())}; "
                       "or the path of a .py file)")
    module = importlib.import_module(f"resnet_jax.configs.{spec}")
  else:
    path = os.path.abspath(os.path.expanduser(spec))
    if not os.path.isfile(path):
      raise UsageError(f"--config {spec}: no config file at {path}")
    module_spec = importlib.util.spec_from_file_location("_resnet_jax_train_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
      raise UsageError(f"--config {spec}: the file has no get_config()")
  config = module.get_config()
  config.lock()
  return config


def _keys(config, prefix: str = "") -> list[str]:
  out = []
  for key, value in config.items():
    out.append(prefix + key)
    if hasattr(value, "items"):
      out += _keys(value, f"{prefix}{key}.")
  return out


def _parse(text: str, current):
  """`text` as a value of `current`'s type, as ml_collections' config flags parse overrides."""
  if isinstance(current, bool):
    lowered = text.strip().lower()
    if lowered not in ("true", "false", "1", "0"):
      raise ValueError(f"expected true or false, got {text!r}")
    return lowered in ("true", "1")
  if isinstance(current, int):
    return int(text)
  if isinstance(current, float):
    return float(text)
  if isinstance(current, str):
    return text
  value = ast.literal_eval(text)  # tuples, lists, None
  return tuple(value) if isinstance(current, tuple) and isinstance(value, list) else value


def apply_override(config, key: str, text: str) -> None:
  """Sets `config.<key>` (dotted for nested keys) from the command line's text.

  Raises:
    UsageError: an unknown key (with the closest known ones) or a value of the wrong type.
  """
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part] if part in node else None
    if node is None or not hasattr(node, "items"):
      break
  if node is None or not hasattr(node, "items") or leaf not in node:
    close = difflib.get_close_matches(key, _keys(config), n=1)
    hint = f"; did you mean config.{close[0]}?" if close else ""
    raise UsageError(f"--config.{key}: no such config key{hint}")
  try:
    node[leaf] = _parse(text, node[leaf])
  except (ValueError, TypeError, SyntaxError) as e:
    raise UsageError(f"--config.{key}={text}: not a value for this key ({e})") from None
