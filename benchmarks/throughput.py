"""Training-step and inference images/s of resnet_jax and torchvision, side by side on one device.

Run on the GPU machine (all in one process, so every figure comes from the same device and run):

  python benchmarks/throughput.py --models resnet18,resnet50,resnet101 --batch 256 --out throughput.json

and, as a smoke test on a CPU:

  python benchmarks/throughput.py --models resnet18 --batch 8 --image-size 64 --steps 2 --windows 2

What is timed. Training: one full step on a synthetic uint8 batch already on the device, forward,
backward and the SGD-momentum update with weight decay, bf16 compute (the step `train.py` runs:
`steps.train_step` under `jax.jit` with the state donated); torchvision: the same step with
channels_last, bf16 autocast and `torch.optim.SGD(momentum=0.9, weight_decay=1e-4)`, eager and under
`torch.compile`. Inference: bf16 forward; resnet_jax with BatchNorm folded (`inference.fold_batchnorm`),
torchvision in eval mode. The first steps (compilation, autotuning) are timed separately; then
`--windows` windows of `--steps` steps each, synchronised at the ends, and the median window's
images/s is reported.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import models
from resnet_jax.data import image_ops
from resnet_jax.training import optim, train_lib
from resnet_jax.training import steps as jax_steps
from resnet_jax.models.inference import fold_batchnorm

MEAN, STD = image_ops.IMAGENET_MEAN_255, image_ops.IMAGENET_STD_255


def _timed_windows(step, sync, steps: int, windows: int, warmup: int) -> tuple[float, list[float]]:
  """(seconds of the warm-up steps, seconds of each timed window of `steps` steps)."""
  start = time.perf_counter()
  for _ in range(warmup):
    step()
  sync()
  warm = time.perf_counter() - start
  times = []
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(steps):
      step()
    sync()
    times.append(time.perf_counter() - start)
  return warm, times


def _result(batch, steps, warm, times, peak_bytes):
  rates = [batch * steps / t for t in times]
  return {"images_per_s": statistics.median(rates), "windows": rates, "warmup_s": warm,
          "peak_memory_gib": None if peak_bytes is None else peak_bytes / 2**30}


def _jax_peak_bytes():
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def jax_train(name, batch, size, dtype, steps, windows, warmup):
  model = models.get_model(name, dtype=dtype)
  schedule = lambda step: 0.1
  tx = optim.create_sgd(schedule, momentum=0.9, nesterov=False, weight_decay=1e-4,
                                  exclude_bn_and_bias=False)
  state = jax.device_put(train_lib.initial_state(model, tx, (size, size, 3), seed=0))
  step_fn = jax.jit(functools.partial(jax_steps.train_step, model=model, tx=tx, schedule=schedule,
                                      mean=MEAN, std=STD), donate_argnums=0)
  rng = np.random.default_rng(0)
  data = jax.device_put({"image": rng.integers(0, 256, (batch, size, size, 3), np.uint8),
                         "label": rng.integers(0, 1000, (batch,), np.int32)})
  holder = {"state": state}

  def step():
    holder["state"], holder["metrics"] = step_fn(holder["state"], data)

  sync = lambda: jax.block_until_ready(holder["metrics"])
  warm, times = _timed_windows(step, sync, steps, windows, warmup)
  return _result(batch, steps, warm, times, _jax_peak_bytes())


def jax_infer(name, batch, size, dtype, steps, windows, warmup):
  model = models.get_model(name, dtype=dtype)
  variables = model.init(jax.random.key(0, impl="rbg"), jnp.zeros((1, size, size, 3)))
  folded, folded_vars = fold_batchnorm(model, jax.device_get(variables))
  folded_vars = jax.device_put(folded_vars)
  x = jax.device_put(np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), np.uint8))

  @jax.jit
  def forward(v, images):
    images = image_ops.normalize(images, MEAN, STD).astype(dtype)
    return folded.apply(v, images)

  holder = {}

  def step():
    holder["out"] = forward(folded_vars, x)

  warm, times = _timed_windows(step, lambda: jax.block_until_ready(holder["out"]), steps, windows,
                               warmup)
  return _result(batch, steps, warm, times, _jax_peak_bytes())


def torch_run(name, batch, size, mode, compiled, steps, windows, warmup, device):
  import torch
  from resnet_jax._torchvision import import_torchvision
  tv = import_torchvision()
  torch.backends.cudnn.benchmark = True
  model = tv.models.get_model(name).to(device).to(memory_format=torch.channels_last)
  amp = dict(device_type=device.split(":")[0], dtype=torch.bfloat16)
  mean = torch.tensor(MEAN, device=device, dtype=torch.float32).view(1, 3, 1, 1)
  std = torch.tensor(STD, device=device, dtype=torch.float32).view(1, 3, 1, 1)
  g = torch.Generator().manual_seed(0)
  images = torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8).to(device)
  images = images.contiguous(memory_format=torch.channels_last)
  labels = torch.randint(0, 1000, (batch,), generator=g).to(device)
  if mode == "train":
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def train_step():
      x = (images.float() - mean) / std
      with torch.autocast(**amp):
        loss = torch.nn.functional.cross_entropy(model(x), labels)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      return loss
    fn = torch.compile(train_step) if compiled else train_step
  else:
    model.eval()

    @torch.no_grad()
    def infer_step():
      x = (images.float() - mean) / std
      with torch.autocast(**amp):
        return model(x)
    fn = torch.compile(infer_step) if compiled else infer_step

  sync = (lambda: torch.cuda.synchronize()) if device.startswith("cuda") else (lambda: None)
  if device.startswith("cuda"):
    torch.cuda.reset_peak_memory_stats()
  warm, times = _timed_windows(fn, sync, steps, windows, warmup)
  peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
  del model, fn
  if device.startswith("cuda"):
    torch.cuda.empty_cache()
  return _result(batch, steps, warm, times, peak)


def largest_batch(run_fn, start: int, limit: int) -> int:
  """The largest power-of-two multiple of `start` up to `limit` for which `run_fn(batch)` succeeds."""
  best, batch = 0, start
  while batch <= limit:
    try:
      run_fn(batch)
    except Exception as e:  # out-of-memory surfaces as different types in JAX and torch
      print(f"  batch {batch}: {type(e).__name__}: {str(e).splitlines()[0][:120]}", file=sys.stderr)
      break
    best, batch = batch, batch * 2
  return best


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="resnet18,resnet50,resnet101")
  parser.add_argument("--modes", default="train,infer")
  parser.add_argument("--frameworks", default="jax,torch_eager,torch_compile")
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--image-size", type=int, default=224)
  parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
  parser.add_argument("--windows", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--max-batch", type=int, default=0,
                      help="also search the largest batch that fits, up to this (0: skip)")
  parser.add_argument("--out", default=None, help="write the results as JSON here")
  args = parser.parse_args(argv)

  device = "cuda" if jax.default_backend() == "gpu" else "cpu"
  dtype = jnp.dtype(args.dtype)
  common = dict(steps=args.steps, windows=args.windows, warmup=args.warmup)
  results = {"device": str(jax.local_devices()[0].device_kind), "backend": jax.default_backend(),
             "jax": jax.__version__, "date": time.strftime("%Y-%m-%d"), "batch": args.batch,
             "image_size": args.image_size, "dtype": args.dtype, "runs": []}
  for name in args.models.split(","):
    for mode in args.modes.split(","):
      for framework in args.frameworks.split(","):
        if framework == "jax":
          fn = jax_train if mode == "train" else jax_infer
          run = lambda b: fn(name, b, args.image_size, dtype, **common)
        else:
          run = lambda b: torch_run(name, b, args.image_size, mode, framework == "torch_compile",
                                    device=device, **common)
        row = {"model": name, "mode": mode, "framework": framework, **run(args.batch)}
        if args.max_batch:
          row["largest_batch"] = largest_batch(
              lambda b: run(b) if b != args.batch else None, args.batch, args.max_batch)
        results["runs"].append(row)
        print(f"{name:10s} {mode:6s} {framework:14s} {row['images_per_s']:10.1f} img/s  "
              f"warm-up {row['warmup_s']:.1f} s", flush=True)

  print(_table(results))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)
  return 0


def _table(results) -> str:
  runs = {(r["model"], r["mode"], r["framework"]): r for r in results["runs"]}
  lines = [f"# {results['device']} ({results['backend']}), {results['date']}, batch {results['batch']}, "
           f"{results['image_size']}px, {results['dtype']}",
           "| model | mode | resnet_jax img/s | torch eager | torch.compile | vs eager | vs compile |",
           "|---|---|---:|---:|---:|---:|---:|"]
  for (name, mode) in dict.fromkeys((m, d) for m, d, _ in runs):
    get = lambda fw: runs.get((name, mode, fw), {}).get("images_per_s")
    ours, eager, comp = get("jax"), get("torch_eager"), get("torch_compile")
    fmt = lambda v: "-" if v is None else f"{v:,.0f}"
    ratio = lambda a, b: "-" if not (a and b) else f"{a / b:.2f}x"
    lines.append(f"| {name} | {mode} | {fmt(ours)} | {fmt(eager)} | {fmt(comp)} | "
                 f"{ratio(ours, eager)} | {ratio(ours, comp)} |")
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
