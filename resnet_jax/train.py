"""`resnet-jax train` and `python -m resnet_jax.train`: a recipe or config file, trained into a workdir.

  resnet-jax train --config digits --workdir runs/digits [--config.key=value ...]
  resnet-jax train --config my_config.py --workdir runs/mine

A recipe is a module of `resnet_jax.configs` (shipped in the package); a path names a file with a
`get_config()`. Any key can be overridden (`--config.batch_size=128`, `--config.model_overrides.in_channels=1`);
the config is locked, so an unknown key is an error. The same workdir resumes from its newest checkpoint.
This module only parses: the training itself is `train_lib.train_and_evaluate`.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import importlib.util
import os
import pkgutil
import re
import sys
from typing import Optional, Sequence

OVERRIDE = re.compile(r"--config\.([A-Za-z_][\w.]*)(?:=(.*))?$", re.S)


class UsageError(ValueError):
  """A bad command line or config file name; printed as one line."""


def recipes() -> list[str]:
  """The recipe names `--config` accepts (the modules of `resnet_jax.configs`)."""
  from resnet_jax import configs
  return sorted(m.name for m in pkgutil.iter_modules(configs.__path__) if not m.name.startswith("_"))


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


def build_parser(prog: str) -> argparse.ArgumentParser:
  from resnet_jax.cli import Parser  # defaults in the help, one-line usage errors
  p = Parser(prog=prog, allow_abbrev=False, description=__doc__.split("\n")[0],
             epilog="Any config key: --config.KEY=VALUE (keys and defaults: resnet_jax/configs/"
                    f"default.py). Recipes: {', '.join(recipes())}.")
  p.add_argument("--config", required=True, help="a recipe name, or the path of a config file")
  p.add_argument("--workdir", required=True,
                 help="checkpoints, metrics and TensorBoard events; resumed if it holds a checkpoint")
  return p


def parse(argv: Sequence[str], prog: str):
  """(config with the overrides applied, workdir) from the command line."""
  parser = build_parser(prog)
  args, rest = parser.parse_known_args(argv)
  config = load_config(args.config)
  rest = list(rest)
  while rest:
    match = OVERRIDE.match(rest.pop(0))
    if not match:
      parser.error(f"unrecognized argument; expected --config.KEY=VALUE")
    key, text = match.groups()
    if text is None:  # --config.key value
      if not rest:
        parser.error(f"--config.{key} needs a value")
      text = rest.pop(0)
    apply_override(config, key, text)
  return config, args.workdir


def main(argv: Optional[Sequence[str]] = None, prog: str = "resnet-jax train") -> int:
  """Trains as the command line says; prints the final evaluation on stdout, the progress on stderr.
  Returns the exit status: user errors are one line on stderr and status 2."""
  from absl import logging as absl_logging
  from resnet_jax import logs, train_lib
  from resnet_jax.metrics import describe_evaluation
  argv = sys.argv[1:] if argv is None else argv
  # Our own progress messages; Orbax's and JAX's INFO logs would bury them.
  absl_logging.set_verbosity(absl_logging.WARNING)
  try:
    config, workdir = parse(argv, prog)
    with logs.to_stderr():
      result = train_lib.train_and_evaluate(config, workdir)
  except (UsageError, *train_lib.USER_ERRORS) as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    return 2
  print(f"final: eval {describe_evaluation(result)}")
  return 0


if __name__ == "__main__":
  sys.exit(main(prog="python -m resnet_jax.train"))
