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
    UsageError: no such recipe or file (with the closest recipe names), or a file that fails.
  """
  if not spec.endswith(".py") and os.sep not in spec:
    if spec not in recipes():
      close = difflib.get_close_matches(spec, recipes(), n=3)
      hint = f"did you mean {' or '.join(close)}? " if close else ""
      raise UsageError(f"--config {spec}: no such recipe ({hint}recipes: {', '.join(recipes())}; "
                       "or the path of a .py file)")
    config = importlib.import_module(f"resnet_jax.configs.{spec}").get_config()
  else:
    path = os.path.abspath(os.path.expanduser(spec))
    if not os.path.isfile(path):
      raise UsageError(f"--config {spec}: no config file at {path}")
    config = _run_config_file(spec, path)
  config.lock()
  return config


def _run_config_file(spec: str, path: str):
  """The file's `get_config()`; whatever the file raises (a syntax error, a misspelled key...) is a
  UsageError naming the file and the line."""
  import traceback
  module_spec = importlib.util.spec_from_file_location("_resnet_jax_train_config", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
      raise UsageError(f"--config {spec}: the file has no get_config()")
    return module.get_config()
  except UsageError:
    raise
  except SyntaxError as e:  # Also IndentationError; its line is the file's, not a frame's.
    where = f"{e.filename or path}, line {e.lineno}" if e.lineno else path
    raise UsageError(f"--config {spec}: {where}: {type(e).__name__}: {e.msg}") from None
  except Exception as e:  # noqa: BLE001 -- the user's code: any error is theirs to fix.
    frames = [f for f in traceback.extract_tb(e.__traceback__) if os.path.abspath(f.filename) == path]
    where = f"{path}, line {frames[-1].lineno}" if frames else path
    raise UsageError(f"--config {spec}: {where}: {type(e).__name__}: {_first_line(e)}") from None


def _first_line(error: Exception) -> str:
  """The gist of an error in one line: ml_collections' locked-config errors (a KeyError or
  AttributeError whose text lists every field) keep their first sentence and suggestion."""
  text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
  lines = text.strip().splitlines() or [""]
  first = lines[0].split(" Other fields present:")[0].lstrip("\x27\"")
  hint = lines[-1] if len(lines) > 1 and lines[-1].startswith("Did you mean") else ""
  return f"{first} {hint}".strip()[:500]


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
