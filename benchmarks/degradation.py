"""The degradation experiment (He et al. 2015, figs. 4 and 6): plain and residual nets of two depths.

plain20, plain56, resnet20 and resnet56 train with one recipe (the repository's config for the
dataset, only `model` changes), and their training error (dashed) and test error (solid) are drawn
in one PNG, plain nets on the left and ResNets on the right, as the paper's figure 6.

On scikit-learn's digits (offline, the default; the command that made docs/degradation_digits.png):

  python benchmarks/degradation.py --dataset digits --epochs 20 --out docs/degradation_digits.png

On CIFAR-10 prepared with `tfds build cifar10 --file_format=array_record` (the paper's recipe of
configs/cifar10_resnet20.py: 64k iterations, lr 0.1 divided by 10 at 32k and 48k):

  python benchmarks/degradation.py --dataset cifar10 --data-dir ~/tensorflow_datasets \
      --out degradation_cifar10.png

Each model trains in WORKDIR/<dataset>_<model>; running the command again resumes unfinished runs
and only redraws finished ones. The training error of an evaluation point is the mean error of the
training batches since the previous one (BatchNorm in training mode, as the paper's thin curves).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
from typing import Optional, Sequence

MODELS = ("plain20", "plain56", "resnet20", "resnet56")
DATASETS = ("digits", "cifar10")


def recipe(dataset: str, model: str, *, epochs: Optional[float] = None,
           train_steps: Optional[int] = None, data_dir: str = "", batch_size: Optional[int] = None,
           image_size: Optional[int] = None, evals_per_epoch: int = 1):
  """The config of one run: the dataset's recipe with `model`, metrics at every step.

  Args:
    dataset: 'digits' (configs/digits.py) or 'cifar10' (configs/cifar10_resnet20.py, the paper's).
    model: a CIFAR-style name of depth 6n + 2, e.g. 'plain56' (see `_registered`).
    epochs, train_steps: shorten (or lengthen) the recipe; the learning rate is divided by 10 at
      50% and 75% of the run, the paper's 32k and 48k of 64k iterations.
    batch_size, image_size: overrides, for quick runs.
    evals_per_epoch: test-error points per epoch when `train_steps`/`epochs` set the length.
  """
  if dataset == "digits":
    from resnet_jax.configs import digits
    config = digits.get_config()
  elif dataset == "cifar10":
    from resnet_jax.configs import cifar10_resnet20
    config = cifar10_resnet20.get_config()
    config.data_dir = data_dir
    # The paper's figure shows test error; its recipe validates on 5k training images instead.
    config.train_split, config.eval_split = "train", "test"
  else:
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
  config.model, blocks = _registered(model)
  if blocks:
    config.model_overrides.stage_sizes = (blocks,) * 3
  if batch_size:
    config.batch_size = batch_size
  if image_size:
    config.image_size = image_size
  if train_steps or epochs:
    steps_per_epoch = _train_size(dataset) / config.batch_size
    total = train_steps or int(math.ceil(epochs * steps_per_epoch))
    config.num_train_steps = total
    config.schedule_unit = "steps"
    config.lr_boundaries = (total // 2, total * 3 // 4)
    config.eval_every_steps = max(1, int(round(steps_per_epoch / evals_per_epoch)))
  config.log_every_steps = 1  # Every step's training accuracy, averaged between evaluations.
  config.checkpoint_every_steps = config.num_train_steps if config.num_train_steps > 0 else 10**9
  config.keep_checkpoints = 1
  config.async_checkpoints = False
  config.progress_bar = False
  return config


def _registered(model: str) -> tuple[str, int]:
  """(registered name, blocks per stage or 0) for a CIFAR-style name: 'plain56' is registered; an
  unregistered depth 6n + 2 (e.g. 'resnet8', for quick runs) is 'resnet20' with n blocks per stage."""
  from resnet_jax import models
  if model in models.list_models():
    return model, 0
  match = re.fullmatch(r"(plain|resnet)(\d+)", model)
  if not match or (int(match[2]) - 2) % 6 or int(match[2]) < 8:
    raise ValueError(f"unknown model {model!r}; expected plain or resnet with depth 6n + 2, n >= 1")
  return f"{match[1]}20", (int(match[2]) - 2) // 6


def _train_size(dataset: str) -> int:
  # The recipes' training splits: digits' 80% of 1797 (input_pipeline.digits) and CIFAR-10's 50k.
  return {"digits": 1437, "cifar10": 50_000}[dataset]


def curves(workdir: str, steps_per_epoch: float) -> dict:
  """{'epoch', 'train_error', 'test_error'} (errors in %) at each evaluation of a finished run."""
  from resnet_jax.training.metrics import read_metrics
  records = read_metrics(workdir)
  train, evaluation = records.get("train", {}), records.get("eval", {})
  out = {"epoch": [], "train_error": [], "test_error": []}
  previous = 0
  for step in sorted(evaluation):
    window = [100.0 * (1.0 - train[s]["accuracy"]) for s in range(previous + 1, step + 1) if s in train]
    previous = step
    if not window:
      continue
    out["epoch"].append(step / steps_per_epoch)
    out["train_error"].append(sum(window) / len(window))
    out["test_error"].append(100.0 * (1.0 - evaluation[step]["top1"]))
  return out


def run_all(dataset: str, models: Sequence[str], workdir: str, **recipe_kw) -> dict:
  """Trains (or resumes) each model; returns {model: curves}."""
  from resnet_jax.training import train_lib
  results = {}
  for model in models:
    config = recipe(dataset, model, **recipe_kw)
    run_dir = os.path.join(workdir, f"{dataset}_{model}")
    final = train_lib.train_and_evaluate(config, run_dir)
    results[model] = curves(run_dir, _train_size(dataset) / config.batch_size)
    logging.getLogger(__name__).info("%s: final test error %.2f%%, training error %.2f%%", model,
                                     100.0 * (1.0 - final["top1"]), results[model]["train_error"][-1])
  return results


# Okabe-Ito colours, distinct also for colour-blind readers: one per depth (shallow blue, deep vermilion).
DEPTH_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7")
# Error below this (in %) is drawn at it: a log axis has no 0, and the residual nets reach 0% training
# error on digits.
ERROR_FLOOR = 0.1


def plot(results: dict, out: str, title: str) -> str:
  """Plain nets left, ResNets right; training error dashed, test error solid (the paper's fig. 6),
  on a log error axis so the residual nets' last percent stays readable."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.lines import Line2D
  families = [f for f in ("plain", "resnet") if any(m.startswith(f) for m in results)]
  fig, axes = plt.subplots(1, len(families), figsize=(5.5 * len(families), 4.6), sharey=True,
                           squeeze=False)
  depths = sorted({int(re.sub(r"\D", "", m)) for m in results})
  colors = dict(zip(depths, DEPTH_COLORS))
  floor = lambda errors: [max(e, ERROR_FLOOR) for e in errors]
  for ax, family in zip(axes[0], families):
    name = "plain" if family == "plain" else "ResNet"
    handles = []
    for model, r in sorted(results.items()):
      if not model.startswith(family):
        continue
      depth = int(model[len(family):])
      ax.plot(r["epoch"], floor(r["train_error"]), "--", color=colors[depth], lw=1)
      ax.plot(r["epoch"], floor(r["test_error"]), "-", color=colors[depth], lw=1.8)
      handles.append(Line2D([], [], color=colors[depth], lw=1.8,
                            label=f"{name}-{depth}: train {r['train_error'][-1]:.1f}%, "
                                  f"test {r['test_error'][-1]:.1f}%"))
    handles += [Line2D([], [], color="0.4", ls="--", lw=1, label="dashed: training error"),
                Line2D([], [], color="0.4", ls="-", lw=1.8, label="solid: test error")]
    ax.set(xlabel="epoch", title=f"{'plain' if family == 'plain' else 'residual'} networks",
           yscale="log")
    ax.grid(alpha=0.3, which="both")
    # Below the axes: inside, the legend would cover the curves.
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8,
              frameon=False)
  axes[0][0].set(ylabel=f"top-1 error (%, log; 0 drawn at {ERROR_FLOOR})", ylim=(ERROR_FLOOR * 0.8, 100))
  fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=80)
  plt.close(fig)
  return out


def summary(results: dict) -> list[str]:
  """One line per model, and whether the deeper plain net trained worse than the shallower one."""
  lines = [f"{m:10s} final training error {r['train_error'][-1]:6.2f}%  test error "
           f"{r['test_error'][-1]:6.2f}%" for m, r in results.items()]
  for family in ("plain", "resnet"):
    pair = sorted((int(m[len(family):]), m) for m in results if m.startswith(family))
    if len(pair) >= 2:
      (_, shallow), (_, deep) = pair[0], pair[-1]
      worse = results[deep]["train_error"][-1] > results[shallow]["train_error"][-1]
      lines.append(f"{deep} trained {'worse' if worse else 'no worse'} than {shallow} "
                   f"(final training error {results[deep]['train_error'][-1]:.2f}% vs "
                   f"{results[shallow]['train_error'][-1]:.2f}%)")
  return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--dataset", choices=DATASETS, default="digits")
  p.add_argument("--data-dir", default="", help="TFDS data_dir for cifar10")
  p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
  p.add_argument("--epochs", type=float, help="training length (default: the recipe's)")
  p.add_argument("--train-steps", type=int, help="training length in steps (overrides --epochs)")
  p.add_argument("--evals-per-epoch", type=int, default=1)
  p.add_argument("--batch-size", type=int)
  p.add_argument("--image-size", type=int)
  p.add_argument("--workdir", default="runs/degradation")
  p.add_argument("--out", default="degradation.png", help="the PNG to write")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(message)s")
  logging.getLogger("resnet_jax").setLevel(logging.INFO)
  logging.getLogger(__name__).setLevel(logging.INFO)
  models = [m for m in args.models.split(",") if m]
  results = run_all(args.dataset, models, args.workdir, epochs=args.epochs,
                    train_steps=args.train_steps, data_dir=args.data_dir,
                    batch_size=args.batch_size, image_size=args.image_size,
                    evals_per_epoch=args.evals_per_epoch)
  with open(os.path.join(args.workdir, f"{args.dataset}_curves.json"), "w") as f:
    json.dump(results, f, indent=1)
  length = (f"{args.train_steps} steps" if args.train_steps else
            f"{args.epochs:g} epochs" if args.epochs else "the recipe's length")
  plot(results, args.out, f"{args.dataset}: plain vs residual networks, one recipe ({length}), "
                          "one seed (0)")
  print("\n".join(summary(results)))
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
