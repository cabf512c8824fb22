"""Checks converted torchvision weights on an accelerator: Flax (float32, bfloat16) vs torchvision.

The reference is torchvision in float32 on the CPU (TF32 cannot creep in there). For each
architecture, compute dtype and JAX matmul precision it prints the max absolute and relative error of
the logits and top-1/top-5 agreement, on random inputs and on scikit-image's sample photos.

  python benchmarks/verify_gpu.py                                   # all ten, random weights, GPU
  python benchmarks/verify_gpu.py --weights-dir ~/.cache/torch/hub/checkpoints   # official weights
  python benchmarks/verify_gpu.py --device cpu --archs resnet18 --size 64       # smoke test on CPU

The GPU machines have no network: official weights must be copied there first (files named as
torchvision's, e.g. resnet50-11ad3fa6.pth); without them, seeded random weights with randomised
BatchNorm statistics are used, which test the conversion just as well.
"""

import argparse
import datetime
import os
import sys


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu", help="where JAX runs")
  parser.add_argument("--archs", default="all", help="comma-separated, or 'all' ten")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--precisions", default="highest,default",
                      help="JAX matmul precisions for float32 ('default' allows TF32 on GPUs)")
  parser.add_argument("--weights-dir", help="directory with torchvision's .pth files; else random")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=224, help="side of the random inputs")
  parser.add_argument("--seed", type=int, default=0)
  return parser.parse_args()


def torch_model_and_transform(arch, weights_dir, seed):
  """torchvision model (V2 weights where found in weights_dir, else random) and its preprocessing."""
  from resnet_jax.weights import hub, verify
  from resnet_jax.data import transforms
  if weights_dir:
    for name in ("IMAGENET1K_V2", "IMAGENET1K_V1"):
      if (arch, name) in hub.WEIGHTS:
        weights = hub.WEIGHTS[arch, name]
        path = os.path.join(weights_dir, weights.filename)
        if os.path.isfile(path):
          import torch
          model = verify.torchvision_model(arch)
          model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
          return model, weights.transforms(), f"{name} ({weights.filename})"
  return verify.torchvision_model(arch, seed=seed), transforms.ImageClassification(), "random"


def main():
  args = parse_args()
  # Must be set before jax is imported.
  os.environ["JAX_PLATFORMS"] = "cpu" if args.device == "cpu" else "cuda"
  import jax
  import jax.numpy as jnp
  import torch
  from resnet_jax.weights import convert, verify
  from resnet_jax.models.resnet import get_model

  archs = convert.TORCHVISION_ARCHS if args.archs == "all" else args.archs.split(",")
  try:
    device = jax.devices()[0]
  except Exception as e:  # noqa: BLE001 -- JAX raises RuntimeError or a bare AssertionError.
    detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"verify_gpu.py: error: JAX finds no {args.device.upper()} here ({detail}); on a machine "
          "without one, run it with --device cpu", file=sys.stderr)
    return 2
  print(f"# {datetime.date.today()}  JAX {jax.__version__} on {device.platform} "
        f"({device.device_kind}), torch {torch.__version__} float32 CPU reference")
  print(f"{'arch':18s} {'weights':14s} {'dtype':9s} {'precision':9s} {'inputs':7s} "
        f"{'max abs':>9s} {'rel':>9s} {'top-1':>6s} {'top-5':>6s}")
  failed = False
  for arch in archs:
    torch_model, transform, weights = torch_model_and_transform(arch, args.weights_dir, args.seed)
    variables = jax.device_put(convert.from_torchvision(torch_model, arch))
    batches = verify.inputs(transform, seed=args.seed, batch=args.batch, size=args.size)
    expected = {name: verify.run_torchvision(torch_model, x) for name, x in batches.items()}
    for dtype in args.dtypes.split(","):
      model = get_model(arch, dtype=jnp.dtype(dtype))
      # bfloat16 compute does not depend on the matmul precision: one run is enough.
      precisions = args.precisions.split(",") if dtype == "float32" else ["default"]
      for precision in precisions:
        with jax.default_matmul_precision(precision):
          forward = jax.jit(model.apply)
          for name, x in batches.items():
            agreement = verify.compare_logits(forward(variables, x), expected[name])
            # float32 below 'highest' (TF32 on GPUs) is reported, not held to float32's tolerance.
            held = dtype != "float32" or precision == "highest"
            ok = not held or verify.passes(agreement, dtype)
            failed |= not ok
            print(f"{arch:18s} {weights[:14]:14s} {dtype:9s} {precision:9s} {name:7s} "
                  f"{agreement.max_abs:9.3g} {agreement.rel:9.3g} {agreement.top1:6.1%} "
                  f"{agreement.top5:6.1%}{'' if ok else '  FAIL'}", flush=True)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
