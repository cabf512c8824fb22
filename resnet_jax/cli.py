"""`resnet-jax convert|verify|predict|export|train|evaluate|plot`: thin commands over the library modules.

Heavy imports (torch, torchvision, Orbax, the converters) happen inside the commands, so that
`resnet-jax --help` costs no more than importing the package.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Optional, Sequence

from resnet_jax.data import protocols
from resnet_jax.weights import verify


class _Error(Exception):
  """A failure the user can fix; printed without a traceback."""


class HelpFormatter(argparse.HelpFormatter):
  """Appends each option's default to its help, unless the help already states it."""

  def _get_help_string(self, action):
    text = action.help or ""
    if (any(action.default is v for v in (None, False, argparse.SUPPRESS)) or action.default == ""
        or "default" in text
        or (not action.option_strings and action.nargs not in ("?", "*"))):
      return text
    return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
  """argparse with defaults in the help and usage errors on one line of stderr (exit status 2).

  Subcommands' parsers are made by this class too (argparse's default `parser_class`).
  """

  def __init__(self, *args, **kwargs):
    kwargs.setdefault("formatter_class", HelpFormatter)
    super().__init__(*args, **kwargs)

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Number:
  """An argparse `type`: a finite int or float in [low, high]; anything else is a usage error that
  names the option and the range (argparse adds the option's name)."""

  def __init__(self, kind: type, low: Optional[float] = None, high: Optional[float] = None, *,
               low_open: bool = False):
    self.kind, self.low, self.high, self.low_open = kind, low, high, low_open
    self.__name__ = kind.__name__  # argparse's fallback wording names the type by it.

  def describe(self) -> str:
    what = "an integer" if self.kind is int else "a finite number"
    if self.low is not None and self.high is not None:
      return f"{what} in {'(' if self.low_open else '['}{self.low}, {self.high}]"
    if self.low is not None:
      return f"{what} {'>' if self.low_open else '>='} {self.low}"
    return what

  def __call__(self, text: str):
    import math
    try:
      value = self.kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}") from None
    if (not math.isfinite(value) or (self.low is not None and (
        value <= self.low if self.low_open else value < self.low))
        or (self.high is not None and value > self.high)):
      raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
    return value


POSITIVE_INT = Number(int, 1)
NONNEGATIVE_INT = Number(int, 0)
FINITE = Number(float)
POSITIVE = Number(float, 0, low_open=True)

# Terminal escape codes (colours, bold) that some libraries put in their messages, e.g. torch's
# weights-only refusal: an error printed to a log or a non-terminal must be plain text.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def error_line(error: BaseException) -> str:
  """How a user error is printed: its message without terminal escape codes."""
  return _ANSI.sub("", str(error))


def _load_torchvision_weights(arch: Optional[str], weights: str, cache: Optional[str],
                              ema: bool = False):
  """(state_dict as numpy, arch, transform, path) for a weights name, path or URL."""
  from resnet_jax.weights import convert, hub
  path, transform = hub.resolve(arch, weights, cache)
  state = convert.state_dict_of(path, ema)
  if arch is None:
    inferred = convert.infer_arch(state)
    print(f"inferred architecture: {inferred}", file=sys.stderr)
    arch = inferred.arch
  return state, arch, transform, path


def _converted(args):
  """(variables, ModelSpec) of the weights named by `args` (--arch, --weights, --cache)."""
  from resnet_jax.weights import hub
  return hub.load_weights(args.arch, args.weights, args.cache, allow_nonfinite=args.allow_nonfinite,
                          ema=args.ema, revision=args.revision)


def cmd_convert(args) -> int:
  from resnet_jax.training import checkpoints
  from resnet_jax.weights import convert
  if os.path.exists(os.path.join(args.out, checkpoints.VARIABLES)):
    raise _Error(f"{args.out} already holds a checkpoint; choose a new directory")
  variables, spec = _converted(args)
  head = "converted"
  if args.num_classes is not None and (args.num_classes or None) != spec.num_classes:
    variables = convert.replace_head(variables, spec.arch, args.num_classes, args.seed)
    head = f"new, {args.num_classes} classes, seed {args.seed}" if args.num_classes else "removed"
    # ImageNet's class names belong to the old head.
    spec = spec.replace(num_classes=args.num_classes or None, class_names=())
  spec = spec.replace(source=dict(spec.source, head=head))
  out = checkpoints.save_variables(args.out, variables, spec)
  print(f"wrote {spec.arch} (num_classes={spec.num_classes}, head {head}) to {out}")
  return 0


def _reference_for_verify(args):
  """(reference model holding the weights, arch, transform) for `verify`: torchvision's, or timm's
  for its own names."""
  from resnet_jax.weights import convert
  from resnet_jax.data import transforms
  if args.weights == "random":
    if args.arch is None:
      raise _Error("--weights random needs --arch")
    if args.ema:
      raise _Error("--weights random has no EMA weights; drop --ema")
    return (verify.torchvision_model(args.arch, seed=args.seed), args.arch,
            transforms.ImageClassification())
  if os.path.isdir(args.weights):
    return _reference_of_directory(args)
  state, arch, transform, _ = _load_torchvision_weights(args.arch, args.weights, args.cache,
                                                        args.ema)
  # Checked before torch's load_state_dict, which would cast integer tensors to float silently.
  convert.check_values(state, [k for k in state if not k.endswith("num_batches_tracked")],
                       args.allow_nonfinite)
  return _reference_holding(arch, state, args.allow_nonfinite), arch, transform


def _reference_of_directory(args):
  """`_reference_for_verify` of a directory written by `convert --out` or training: its variables
  go back into torchvision's (or timm's) model, which the converted model must then follow."""
  from resnet_jax.models.resnet import get_model
  from resnet_jax.training import checkpoints
  from resnet_jax.weights import convert, convert_timm
  variables, spec = checkpoints.load_variables(args.weights, ema=args.ema)
  if args.arch is not None and args.arch != spec.arch:
    raise _Error(f"{args.weights} holds a {spec.arch}, not a {args.arch}")
  # Stochastic depth and dropout do nothing in evaluation: the reference's plain model is the same.
  options = {k: v for k, v in spec.model_overrides.items() if k not in ("drop_path_rate", "drop_rate")}
  known = convert.TORCHVISION_ARCHS + tuple(sorted(convert_timm.TIMM_ONLY))
  if spec.arch not in known or spec.in_channels != 3 or options:
    raise _Error(f"{args.weights} holds a {spec.arch} with {spec.in_channels} input channel(s) and "
                 f"options {options}, which neither torchvision nor timm has a model for; verify "
                 "compares with theirs")
  plain = get_model(spec.arch, num_classes=spec.num_classes)
  state = (convert_timm.to_timm(variables, spec.arch, as_numpy=True, model=plain)
           if spec.arch in convert_timm.TIMM_ONLY
           else convert.to_torchvision(variables, spec.arch, as_numpy=True, model=plain))
  return _reference_holding(spec.arch, state), spec.arch, spec.transform()


def _reference_holding(arch: str, state: dict, allow_nonfinite: bool = False):
  """The reference model of `arch` (torchvision's, or timm's for its own names) with the numpy
  `state` loaded (strict), headless without a classifier. The state is first checked as conversion
  checks it, so that keys that do not fit are listed rather than torch's traceback."""
  import numpy as np
  import torch
  from resnet_jax.weights import convert, convert_timm
  convert.from_torchvision(state, arch, allow_nonfinite=allow_nonfinite)  # Raises, listing keys.
  if verify.reference_name(arch) == "timm":
    model = verify.timm_model(arch, num_classes=convert_timm.state_dict_classes(state))
  else:
    num_classes = convert.state_dict_classes(state)
    model = verify.torchvision_model(arch, num_classes=num_classes or 1000)
    if num_classes is None:
      model.fc = torch.nn.Identity()
  model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, strict=True)
  return model


def cmd_verify(args) -> int:
  import jax
  import jax.numpy as jnp
  from resnet_jax.weights import convert
  from resnet_jax.models.resnet import get_model
  torch_model, arch, transform = _reference_for_verify(args)
  variables = convert.from_torchvision(torch_model, arch, allow_nonfinite=args.allow_nonfinite)
  model = get_model(arch, num_classes=convert.variables_classes(variables),
                    dtype=jnp.dtype(args.dtype))
  rtol, min_top1 = verify.TOLERANCES[args.dtype]
  rtol = args.rtol if args.rtol is not None else rtol
  min_top1 = args.min_top1 if args.min_top1 is not None else min_top1
  print(f"{arch}, weights {args.weights}, Flax in {args.dtype} (matmul precision "
        f"{args.precision}) vs {verify.reference_name(arch)} float32 on CPU")
  ok = True
  batches = verify.inputs(transform, seed=args.seed, batch=args.batch, size=args.size,
                          photos=not args.no_photos)
  for name, x in batches.items():
    expected = verify.run_torchvision(torch_model, x)
    with jax.default_matmul_precision(args.precision):
      agreement = verify.compare_logits(model.apply(variables, x), expected)
    print(f"  {name:7s} {'x'.join(map(str, x.shape)):>14s}: {agreement}")
    ok &= verify.passes(agreement, args.dtype, rtol, min_top1)
  print(f"{'PASS' if ok else 'FAIL'}: tolerance rel <= {rtol:g}, top-1 agreement >= {min_top1:.0%}")
  return 0 if ok else 1


def _model_for_predict(args):
  """(variables, ModelSpec) of a checkpoint directory or of torchvision weights."""
  from resnet_jax.training import checkpoints
  if os.path.isdir(args.weights):
    variables, spec = checkpoints.load_variables(args.weights, ema=args.ema)
    if args.arch is not None and args.arch != spec.arch:
      raise _Error(f"{args.weights} holds a {spec.arch}, not a {args.arch}")
  else:
    variables, spec = _converted(args)
  if not spec.num_classes:
    raise _Error(f"{args.weights} has no classifier (fc): nothing to predict")
  return variables, spec


def cmd_predict(args) -> int:
  import jax
  import numpy as np
  for path in args.images:
    if not os.path.isfile(path):
      raise _Error(f"no image file at {path}")
  variables, spec = _model_for_predict(args)
  # The preprocessing the model was trained or published with: size, resize, mean/std, channels.
  batch = spec.transform()(args.images)
  probabilities = np.asarray(jax.nn.softmax(spec.build().apply(variables, batch), axis=-1))
  for path, p in zip(args.images, probabilities):
    top = [int(k) for k in np.argsort(-p)[:args.top]]
    if args.json:
      print(json.dumps({"image": path, "top": [
          {"class": k, "name": spec.class_name(k), "probability": float(p[k])} for k in top]}))
      continue
    print(path)
    for k in top:
      print(f"  {p[k]:.4f}  {spec.class_name(k)} ({k})")
  return 0


def cmd_export(args) -> int:
  from resnet_jax.training import checkpoints
  from resnet_jax.weights import convert
  convert.check_export_path(args.out)  # before reading the checkpoint
  variables, spec = checkpoints.load_variables(args.checkpoint, ema=args.ema)
  if args.arch is not None and args.arch != spec.arch:
    raise _Error(f"{args.checkpoint} holds a {spec.arch}, not a {args.arch}")
  if spec.arch not in convert.TORCHVISION_ARCHS or spec.in_channels != 3 or spec.model_overrides:
    print(f"note: torchvision has no {spec.arch} with these options; the file uses torchvision's key "
          "names all the same", file=sys.stderr)
  # Checked against the model the spec describes (1 input channel, other stage sizes...).
  state = convert.to_torchvision(variables, spec.arch, as_numpy=True, model=spec.build())
  # The spec goes along, so that `convert`/`predict --weights FILE` rebuild this model and its input.
  convert.save_state_dict(state, args.out, spec)
  print(f"wrote the {spec.arch} state_dict ({len(state)} tensors) to {args.out}")
  return 0


def cmd_plot(args) -> int:
  from resnet_jax.training.plot import plot_workdir
  written = plot_workdir(args.workdir, args.out, error_scale=args.error_scale)
  if written:
    print(f"wrote {written}")
  return 0


# ----------------------------------------------------------------------------------------------
# resnet-jax train: --config RECIPE|FILE --workdir DIR [--config.KEY=VALUE ...]. The overrides' keys
# are the config's, which no parser declares: they are what argparse leaves unrecognised.

OVERRIDE = re.compile(r"--config\.([A-Za-z_][\w.]*)(?:=(.*))?$", re.S)
_TRAIN_HELP = dict(description="train a recipe or a config file's get_config() into a workdir",
                   epilog="Any config key: --config.KEY=VALUE (keys and defaults: "
                          "resnet_jax/configs/default.py).")


def _train_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
  from resnet_jax import configs
  p.epilog = f"{p.epilog} Recipes: {', '.join(configs.recipes())}."
  p.add_argument("--config", required=True, help="a recipe name, or the path of a config file")
  p.add_argument("--workdir", required=True,
                 help="checkpoints, metrics and TensorBoard events; resumed if it holds a checkpoint")
  # Its own dest: `resnet-jax --debug train ...` sets the top-level one.
  p.add_argument("--debug", dest="train_debug", action="store_true",
                 help="show the traceback of an error instead of a one-line message")
  return p


def train_parser(prog: str) -> argparse.ArgumentParser:
  """train.py's and `python -m resnet_jax.train`'s parser, the options of `resnet-jax train`."""
  return _train_options(Parser(prog=prog, allow_abbrev=False, **_TRAIN_HELP))


def _train_config(parser: argparse.ArgumentParser, config_name: str, overrides: Sequence[str]):
  """The config of --config with the --config.KEY=VALUE overrides applied, in order."""
  from resnet_jax import configs
  config = configs.load_config(config_name)
  rest = list(overrides)
  while rest:
    match = OVERRIDE.match(rest.pop(0))
    if not match:
      parser.error("unrecognized argument; expected --config.KEY=VALUE")
    key, text = match.groups()
    if text is None:  # --config.key value
      if not rest:
        parser.error(f"--config.{key} needs a value")
      text = rest.pop(0)
    configs.apply_override(config, key, text)
  return config


def _train(parser: argparse.ArgumentParser, args, overrides: Sequence[str], debug: bool) -> int:
  """Trains as parsed; prints the final evaluation on stdout, the progress on stderr. Returns the
  exit status: user errors are one line on stderr and status 2."""
  from absl import logging as absl_logging
  from resnet_jax import configs
  from resnet_jax.training import logs, train_lib
  from resnet_jax.training.metrics import describe_evaluation
  # Our own progress messages; Orbax's and JAX's INFO logs would bury them.
  absl_logging.set_verbosity(absl_logging.WARNING)
  try:
    config = _train_config(parser, args.config, overrides)
  except configs.UsageError as e:
    print(f"{parser.prog}: error: {e}", file=sys.stderr)
    return 2
  try:
    with logs.to_stderr():
      result = train_lib.train_and_evaluate(config, args.workdir)
  # As `main`: what the user gave (config values, data, the workdir, the disk) is one line; the
  # errors of this package name the key or file, those of Python the file.
  except (*train_lib.USER_ERRORS, ImportError, OSError, ValueError) as e:
    if debug:
      raise
    print(f"{parser.prog}: error: {error_line(e)}", file=sys.stderr)
    return 2
  print(f"final: eval {describe_evaluation(result)}")
  return 0


def train_main(argv: Optional[Sequence[str]] = None, prog: str = "resnet-jax train") -> int:
  """train.py and `python -m resnet_jax.train`: `resnet-jax train` with its own program name."""
  parser = train_parser(prog)
  args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
  return _train(parser, args, overrides, args.train_debug)


def cmd_train(args) -> int:
  return _train(args.train_parser, args, args.overrides, args.debug or args.train_debug)


def cmd_evaluate(args) -> int:
  from resnet_jax.training import evaluate
  result = evaluate.evaluate(
      args.checkpoint, args.dataset, args.protocol, split=args.split, data_dir=args.data_dir,
      average=args.average, mean=args.mean, std=args.std, image_size=args.image_size,
      resize_size=args.resize_size, scales=args.scales,
      per_device_batch=args.per_device_batch, images_per_call=args.images_per_call,
      dtype=args.dtype, limit=args.limit, progress=sys.stderr.isatty())
  print(f"{args.checkpoint} on {args.dataset}/{result.split} ({result.count} images), "
        f"{evaluate.PROTOCOL_NAMES[args.protocol]} testing ({result.views} "
        f"view{'s' * (result.views > 1)}, {args.average} average): "
        f"{protocols.format_errors(result.errors)}")
  return 0


def cmd_prepare(args) -> int:
  from resnet_jax.data import prepare
  if args.tfds_splits:
    items = prepare.tfds_items(args.source, args.tfds_splits.split(","), args.data_dir)
    source = f"tfds:{args.source}:{args.tfds_splits}"
  else:
    source = os.path.abspath(os.path.expanduser(args.source))
    items = prepare.folder_items(source, args.out, args.layout)
  summary = prepare.prepare(items, args.out, max_size=args.max_size, quality=args.quality,
                            workers=args.workers, source=source, format=args.format,
                            layout=args.layout)
  print(summary.line(args.out, args.max_size, args.quality))
  return 1 if summary.unreadable else 0  # Every image accounted for: a missing one is a failure.


def _prepare_parser(sub) -> None:
  p = sub.add_parser("prepare", help="copy an image folder or TFDS dataset as JPEGs whose shorter "
                                     "side is at most --max-size (resumable)")
  p.add_argument("source", help="image folder (root/[split/]class/*.jpg), or a TFDS name with "
                                "--tfds-splits")
  p.add_argument("out", help="output image folder; run the same command again to resume")
  p.add_argument("--max-size", type=POSITIVE_INT, default=320,
                 help="largest shorter side, in pixels")
  p.add_argument("--quality", type=Number(int, 1, 100), default=90,
                 help="JPEG quality of re-encoded images")
  p.add_argument("--tfds-splits", help="comma-separated splits of the TFDS dataset SOURCE "
                                       "(default: none, SOURCE is an image folder)")
  p.add_argument("--data-dir", help="TFDS data_dir (default: ~/tensorflow_datasets)")
  p.add_argument("--workers", type=POSITIVE_INT, default=os.cpu_count(),
                 help="threads (default: one per CPU)")
  p.add_argument("--format", default="folder", choices=("folder", "array_record"),
                 help="an image folder, or ArrayRecord shards (config.source='array_record')")
  p.add_argument("--layout", default="auto", choices=("auto", "splits", "classes"),
                 help="an image folder SOURCE is SOURCE/SPLIT/CLASS/** ('splits') or "
                      "SOURCE/CLASS/** ('classes'); 'auto': splits when no folder of SOURCE holds "
                      "an image itself and one holds folders")
  p.set_defaults(run=cmd_prepare)


def _evaluate_parser(sub) -> None:
  p = sub.add_parser("evaluate", help="error rates of a checkpoint under the paper's test protocols",
                     description="A checkpoint's top-1/top-5 error under the paper's testing "
                                 "protocols (resnet_jax/training/evaluate.py).")
  p.add_argument("--checkpoint", required=True,
                 help="converted model directory (resnet-jax convert --out), training workdir, or "
                      "timm's weights name (resnet50.a1_in1k, fetched from the Hugging Face Hub)")
  p.add_argument("--dataset", required=True,
                 help="'digits', 'folder' (--data-dir ROOT with ROOT/SPLIT/<class>/**, as "
                      "training's config.source='folder'), 'array_record' (--data-dir OUT of "
                      "`prepare --format array_record`) or a prepared TFDS dataset, e.g. cifar10, "
                      "imagenet2012")
  p.add_argument("--split", help="the split to evaluate (default: 'validation' for imagenet*, "
                                 "folder and array_record, or 'val' where --data-dir has 'val' "
                                 "and no 'validation'; else 'test')")
  p.add_argument("--data-dir", default="", help="image-folder or prepared root, or TFDS data_dir "
                                                "(default: TFDS's ~/tensorflow_datasets)")
  p.add_argument("--protocol", choices=tuple(protocols.PROTOCOLS), default="center",
                 help="the paper's test protocols: center crop, 10-crop (flips), multi-scale (flips "
                      "and scales: the model must have been trained with them)")
  p.add_argument("--average", choices=protocols.AVERAGES, default="softmax",
                 help="average softmax probabilities or logits over the views")
  p.add_argument("--mean", type=FINITE, nargs="+",
                 help="per-channel mean, 0-255 scale (default: the checkpoint's)")
  p.add_argument("--std", type=POSITIVE, nargs="+",
                 help="per-channel standard deviation, 0-255 scale (default: the checkpoint's)")
  p.add_argument("--image-size", type=POSITIVE_INT,
                 help="the model's input (crop) size (default: the checkpoint's)")
  p.add_argument("--resize-size", type=POSITIVE_INT,
                 help="shorter side before cropping (default: the checkpoint's resize for center, "
                      "image size x 256/224 for ten_crop)")
  p.add_argument("--scales", type=POSITIVE_INT, nargs="+",
                 help="shorter sides of multi_scale (default: image size x {224,256,384,480,640}/224)")
  p.add_argument("--per-device-batch", type=POSITIVE_INT, default=16,
                 help="views per device per call")
  p.add_argument("--images-per-call", type=POSITIVE_INT, default=64,
                 help="images decoded and resized per batch of calls (host memory)")
  p.add_argument("--dtype", choices=("float32", "bfloat16", "auto"), default="float32",
                 help="compute dtype ('auto': bfloat16 on GPU/TPU, float32 on CPU)")
  p.add_argument("--limit", type=POSITIVE_INT,
                 help="evaluate only the first N examples (default: all)")
  p.set_defaults(run=cmd_evaluate)


def _weights_arguments(p: argparse.ArgumentParser, weights_help: str) -> None:
  p.add_argument("--arch", help="model name, e.g. resnet50 (default: inferred from the weights file)")
  p.add_argument("--weights", required=True, help=weights_help)
  p.add_argument("--cache", help="download directory (default: $RESNET_JAX_CACHE or "
                                 "~/.cache/resnet_jax)")
  p.add_argument("--allow-nonfinite", action="store_true",
                 help="convert weights holding NaN or infinity instead of refusing them")
  p.add_argument("--ema", action="store_true",
                 help="the EMA weights of a training checkpoint (torchvision's model_ema, timm's "
                      "state_dict_ema) or of a training workdir (config.model_ema) (default: the "
                      "plain weights)")
  p.add_argument("--revision", help="branch, tag or commit of timm's weights on the Hugging Face Hub "
                                    "(or NAME@REVISION) (default: main)")


def build_parser() -> argparse.ArgumentParser:
  parser = Parser(
      prog="resnet-jax",
      description="ResNets in JAX/Flax: convert and check torchvision weights, predict, evaluate, "
                  "plot training curves.")
  from resnet_jax import __version__
  parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
  parser.add_argument("--debug", action="store_true",
                      help="show the traceback of an error instead of a one-line message")
  sub = parser.add_subparsers(dest="command", required=True)
  torchvision_weights = ("torchvision weights name (IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT), "
                         "timm's weights name from the Hugging Face Hub (resnet50.a1_in1k, "
                         "timm/resnet50d.ra2_in1k), a .pth/.safetensors file (a state_dict in "
                         "torchvision's, timm's or transformers' layout, or a torchvision/timm "
                         "train.py checkpoint), or a URL")

  p = sub.add_parser("convert", help="torchvision weights -> Orbax checkpoint of Flax variables")
  _weights_arguments(p, torchvision_weights)
  p.add_argument("--out", required=True, help="new checkpoint directory")
  p.add_argument("--num-classes", type=NONNEGATIVE_INT,
                 help="replace the classifier by a new one with this many outputs (0: none; "
                      "default: keep the file's)")
  p.add_argument("--seed", type=NONNEGATIVE_INT, default=0, help="seed of a new classifier")
  p.set_defaults(run=cmd_convert)

  p = sub.add_parser("verify", help="compare the converted model with torchvision's on the same inputs")
  _weights_arguments(p, torchvision_weights + ", a directory written by convert or training, or "
                        "'random' (seeded random weights and BatchNorm)")
  p.add_argument("--dtype", choices=sorted(verify.TOLERANCES), default="float32",
                 help="compute dtype of the Flax model")
  p.add_argument("--precision", default="highest", choices=("highest", "high", "default"),
                 help="JAX matmul precision")
  p.add_argument("--batch", type=POSITIVE_INT, default=4, help="random inputs per batch")
  p.add_argument("--size", type=POSITIVE_INT, default=224, help="side of the random inputs")
  p.add_argument("--seed", type=NONNEGATIVE_INT, default=0,
                 help="seed of the random inputs (and random weights)")
  p.add_argument("--no-photos", action="store_true", help="skip scikit-image's sample photos")
  p.add_argument("--rtol", type=Number(float, 0),
                 help="max relative error of the logits (default per dtype)")
  p.add_argument("--min-top1", type=Number(float, 0, 1),
                 help="min top-1 agreement, 0..1 (default per dtype)")
  p.set_defaults(run=cmd_verify)

  p = sub.add_parser("predict", help="print the top classes of images")
  _weights_arguments(p, torchvision_weights + ", or a checkpoint directory")
  p.add_argument("--top", type=POSITIVE_INT, default=5, help="classes to print per image")
  p.add_argument("--json", action="store_true",
                 help="print one JSON object per image (image, top: class, name, probability)")
  p.add_argument("images", nargs="+", help="image files")
  p.set_defaults(run=cmd_predict)

  p = sub.add_parser("export", help="Orbax checkpoint -> torchvision state_dict (.pth or .safetensors)")
  p.add_argument("--checkpoint", required=True, help="checkpoint directory or training workdir")
  p.add_argument("--out", required=True, help="new file: model.pth/.pt (needs torch) or "
                                               "model.safetensors; either keeps the model's spec")
  p.add_argument("--arch", help="override the architecture recorded in the checkpoint "
                                "(default: the recorded one)")
  p.add_argument("--ema", action="store_true",
                 help="a training workdir's EMA weights (model_ema) (default: the raw weights)")
  p.set_defaults(run=cmd_export)

  p = _train_options(sub.add_parser(
      "train", allow_abbrev=False, help="train a recipe (e.g. digits) or a config file into a workdir",
      **_TRAIN_HELP))
  p.set_defaults(run=cmd_train, train_parser=p)

  _evaluate_parser(sub)

  p = sub.add_parser("plot", help="plot the training curves of a workdir")
  p.add_argument("workdir", help="training workdir (holds metrics.jsonl)")
  p.add_argument("--out", help="PNG file to write (default: WORKDIR/curves.png)")
  p.add_argument("--error-scale", choices=("log", "linear"), default="log",
                 help="y axis of the error panel; log as the paper's figures")
  p.set_defaults(run=cmd_plot)
  _prepare_parser(sub)
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  from resnet_jax.training import logs
  parser = build_parser()
  # Left unrecognised: train's --config.KEY=VALUE overrides, an error for any other command.
  args, args.overrides = parser.parse_known_args(argv)
  if args.overrides and args.command != "train":
    parser.error(f"unrecognized arguments: {' '.join(args.overrides)}")
  try:
    with logs.to_stderr():  # the package's one format, as train.py prints it
      return args.run(args)
  # convert's ConversionError and CheckpointError, SpecError and ImageError are ValueErrors, hub's
  # DownloadError an OSError. Anything else is a bug and keeps its traceback.
  except (_Error, ImportError, OSError, ValueError) as e:
    if args.debug:
      raise
    print(f"resnet-jax {args.command}: error: {error_line(e)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
