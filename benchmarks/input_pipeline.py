"""Images/s of the ImageNet training input (JPEG decode, random-resized crop, flip, batching) on this host.

  python benchmarks/input_pipeline.py --images 512 --threads 16 --batch 256

It writes `--images` JPEG files of ImageNet-like sizes (the ILSVRC-2012 training set averages about
400x350 pixels at JPEG quality ~90; sizes here are drawn between 300 and 500 pixels a side) into an
image folder, then runs the same Grain pipeline `train.py` uses (`input_pipeline.ImageFolderSource` ->
`train_dataset(augment='torchvision')` -> a threaded iterator) and reports the median images/s over
timed windows, the first batches excluded. Compare with the training step's rate from
benchmarks/throughput.py: the input keeps up when its images/s is higher.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import grain
import numpy as np
from PIL import Image

from resnet_jax import input_pipeline


def write_jpegs(root: str, count: int, classes: int = 10, seed: int = 0) -> None:
  """`count` JPEGs with smooth random content (so they compress like photos), root/class_k/*.jpg."""
  rng = np.random.default_rng(seed)
  for i in range(count):
    h, w = rng.integers(300, 501, size=2)
    small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((int(w), int(h)), Image.BICUBIC)
    directory = os.path.join(root, f"class_{i % classes}")
    os.makedirs(directory, exist_ok=True)
    image.save(os.path.join(directory, f"{i:06d}.jpg"), quality=90)


def measure(root: str, *, batch: int, threads: int, image_size: int, batches: int, windows: int,
            augment: str = "torchvision") -> dict:
  source = input_pipeline.ImageFolderSource(root)
  ds = input_pipeline.train_dataset(source, global_batch_size=batch, image_size=image_size,
                                    augment=augment, seed=0)
  it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                 prefetch_buffer_size=max(16, 4 * threads))))
  for _ in range(2):  # thread start-up and the first reads
    next(it)
  rates = []
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(batches):
      out = next(it)
    rates.append(batch * batches / (time.perf_counter() - start))
  assert out["image"].shape == (batch, image_size, image_size, 3)
  return {"images_per_s": statistics.median(rates), "windows": rates, "threads": threads,
          "cpus": os.cpu_count(), "batch": batch}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", type=int, default=512)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--image-size", type=int, default=224)
  parser.add_argument("--batches", type=int, default=4, help="batches per timed window")
  parser.add_argument("--windows", type=int, default=3)
  parser.add_argument("--root", default=None, help="reuse an image folder instead of writing one")
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    root = args.root or tmp
    if not args.root:
      write_jpegs(root, args.images)
    result = measure(root, batch=args.batch, threads=args.threads, image_size=args.image_size,
                     batches=args.batches, windows=args.windows)
  print(f"{result['images_per_s']:.0f} images/s with {result['threads']} threads on "
        f"{result['cpus']} CPUs (windows: {', '.join(f'{r:.0f}' for r in result['windows'])})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
