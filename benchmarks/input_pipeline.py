"""Training input images/s: resnet_jax's Grain pipeline vs torchvision's ImageFolder + DataLoader, same files, one run.

  python benchmarks/input_pipeline.py --images 768 --workers 1,2

It writes `--images` JPEGs made from scikit-image's photographs (random crops resized to 300-500 px a
side, quality 90: ImageNet's training images average about 400x350 at quality ~90) into an image
folder, then prints the resize candidates side by side (one thread, random-resized crops of the files
and of scikit-image's photos to 224 px: ms per crop and PSNR from PIL's output, torchvision's; a
jitted resize stands for the accelerator's, run on this machine's CPU), then times, at each worker
count N, one after the other:

  resnet_jax   `train_dataset(augment='torchvision')` (random-resized crop to 224 + flip) through the
               `DeviceIterator` train.py uses, N Grain threads; with `fast_decode` (the crop's blocks of
               each JPEG decoded at a DCT scale that leaves 2x to the resize; OpenCV's resize, and with
               `exact_input=True` PIL's), without it (full decode), 'paper' augmentation, and N worker
               processes instead of threads;
  torchvision  `ImageFolder` + `DataLoader(num_workers=N)` with RandomResizedCrop(224) +
               RandomHorizontalFlip + PILToTensor (uint8 out, as ours), and with torchvision's
               reference recipe's ConvertImageDtype + Normalize on top (float32 out); and the
               paper's augmentation in torchvision (Resize to a shorter side drawn from 256-480,
               RandomCrop(224), flip, float32 with PCA lighting: what resnet_jax's 'paper' gives);
  kernels      resnet_jax's per-image work alone on N threads (read, decode, crop-resize, flip): the
               ceiling of any pipeline built on these kernels, printed as a ratio to torchvision;
  decode only  each JPEG decoder on N threads (Pillow, Pillow's draft at 1/2, simplejpeg, OpenCV,
               libturbojpeg whole, and libturbojpeg decoding only the blocks around a training
               crop, as `fast_decode` does): the floor under any pipeline.

Each pipeline is warmed up (`--warmup` batches and `--warmup-seconds`) before its timed windows, so
that batches its workers prefetched while starting are not timed as if made in the window.

`--prepared S` adds resnet_jax on copies made by `resnet-jax prepare --max-size S` (an image folder
and ArrayRecord shards), and `--sides`
changes the photos' sizes (e.g. 600,1200 for larger originals, where reduced decoding applies).
It prints resnet_jax's 'paper' against torchvision's paper loader at each N, and as its last line
`input pipeline: resnet_jax/torchvision = R.RRx at N workers` ('torchvision' augmentation) for the largest N.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from resnet_jax.data import image_ops, input_pipeline, jpeg, prepare, protocols

OURS, THEIRS = "resnet_jax torchvision (threads, fast decode)", "torchvision DataLoader, uint8 out"
OURS_PAPER = "resnet_jax paper (threads, fast decode)"
TV_PAPER = "torchvision DataLoader, paper augmentation (float out, lighting)"
KERNELS = "resnet_jax kernels alone: read, decode, crop-resize, flip (threads, no pipeline)"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina")


def write_photo_jpegs(root: str, count: int, classes: int = 10, seed: int = 0,
                      sides: tuple[int, int] = (300, 500)) -> list[str]:
  """`count` JPEGs (quality 90) at root/class_k/, each a random crop of a scikit-image photograph
  resized to a random height and width in `sides` (both included)."""
  from skimage import data
  photos = [getattr(data, name)() for name in PHOTOS]
  rng = np.random.default_rng(seed)
  paths = []
  for i in range(count):
    photo = photos[i % len(photos)]
    h, w = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
    # The largest crop of the photo's with the output's aspect, shrunk by up to 30%.
    s = min(photo.shape[0] / h, photo.shape[1] / w) * rng.uniform(0.7, 1.0)
    ch, cw = int(h * s), int(w * s)
    top = int(rng.integers(0, photo.shape[0] - ch + 1))
    left = int(rng.integers(0, photo.shape[1] - cw + 1))
    image = Image.fromarray(photo[top:top + ch, left:left + cw]).resize((w, h), Image.BICUBIC)
    directory = os.path.join(root, f"class_{i % classes}")
    os.makedirs(directory, exist_ok=True)
    paths.append(os.path.join(directory, f"{i:06d}.jpg"))
    image.save(paths[-1], quality=90)
  return paths


# ----------------------------------------------------------------------------------------------
# The pipelines, each an endless iterator of (batch, images in it).

def resnet_jax_batches(root: str, *, batch: int, workers: int, augment: str = "torchvision",
                       fast_decode: bool = True, processes: bool = False, records: bool = False,
                       exact_input: bool = False) -> Iterator[int]:
  """`root` is an image folder, or with `records` a folder of `prepare --format array_record` shards."""
  source = (input_pipeline.ArrayRecordSource if records else input_pipeline.ImageFolderSource)(root)
  ds = input_pipeline.train_dataset(source, global_batch_size=batch, image_size=224, augment=augment,
                                    seed=0, fast_decode=fast_decode, exact_input=exact_input)
  it = input_pipeline.DeviceIterator(ds, put=lambda b: b, prefetch=2,
                                     num_threads=1 if processes else workers,
                                     num_processes=workers if processes else 0)
  try:
    for b in it:
      assert b["image"].shape == (batch, 224, 224, 3)
      yield batch
  finally:
    it.close()


class _RandomShorterSide:
  """The paper's scale augmentation as a torch transform: the shorter side resized to an integer
  drawn uniformly from [lo, hi] with `torch.randint` (torchvision's `Resize(S)`: PIL's antialiased
  bilinear, the longer side truncated)."""

  def __init__(self, lo: int, hi: int):
    self.lo, self.hi = lo, hi

  def __call__(self, image):
    import torch
    from resnet_jax._torchvision import import_torchvision
    size = int(torch.randint(self.lo, self.hi + 1, size=(1,)).item())
    return import_torchvision().transforms.functional.resize(image, size)


class _Lighting:
  """The paper's PCA lighting noise as a torch transform, written as torchvision users write it
  (torchvision has none): one RGB shift `eigvec @ (alpha * eigval)`, alpha ~ N(0, 0.1^2), added to a
  CHW image of 0-255 pixels, float32 out (what resnet_jax's 'paper' augmentation leaves to its step)."""

  def __init__(self):
    import torch
    self.eigval = torch.tensor(protocols.IMAGENET_EIGVAL, dtype=torch.float32) * 255.0
    self.eigvec = torch.tensor(protocols.IMAGENET_EIGVEC, dtype=torch.float32)

  def __call__(self, image):
    import torch
    alpha = torch.randn(3) * 0.1
    return image.to(torch.float32) + (self.eigvec @ (alpha * self.eigval)).view(3, 1, 1)


def torchvision_paper_transform(size: int = 224):
  """He et al.'s training augmentation (sec. 3.4) in torchvision: shorter side uniform in [256, 480]
  (scaled with `size`/224, as resnet_jax's), RandomCrop(size), RandomHorizontalFlip, float32 CHW with
  the lighting noise. Its draws are torch's, in resnet_jax's order; tests/test_input_pipeline.py
  checks that from the same draws it gives resnet_jax's exact 'paper' images."""
  from resnet_jax._torchvision import import_torchvision
  T = import_torchvision().transforms
  lo, hi = input_pipeline._paper_short_side(size)
  return T.Compose([_RandomShorterSide(lo, hi), T.RandomCrop(size), T.RandomHorizontalFlip(),
                    T.PILToTensor(), _Lighting()])


def torchvision_batches(root: str, *, batch: int, workers: int, normalize: bool = False,
                        paper: bool = False) -> Iterator[int]:
  """`paper`: `torchvision_paper_transform`, float32 out (the same images as resnet_jax's 'paper')."""
  import torch
  from resnet_jax._torchvision import import_torchvision
  torchvision = import_torchvision()
  datasets, T = torchvision.datasets, torchvision.transforms
  if paper:
    steps = [torchvision_paper_transform()]
  else:
    steps = [T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.PILToTensor()]
  if normalize:  # torchvision's references/classification/presets.py ClassificationPresetTrain.
    steps += [T.ConvertImageDtype(torch.float), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
  ds = datasets.ImageFolder(root, T.Compose(steps))
  sampler = torch.utils.data.RandomSampler(ds, num_samples=10**8)  # endless, one epoch after another
  loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                                       persistent_workers=True, prefetch_factor=4)
  for images, _ in loader:
    assert images.shape == (batch, 3, 224, 224)
    yield batch


def _region_decoder() -> Callable[[bytes], np.ndarray]:
  """libturbojpeg decoding only the blocks around a random-resized crop's box (drawn as training
  draws it), at the DCT scale training would use: the decode that `fast_decode` runs."""
  local = threading.local()

  def one(data: bytes) -> np.ndarray:
    if not hasattr(local, "rng"):
      local.rng = np.random.default_rng(threading.get_ident())
    top, left, ch, cw = input_pipeline.random_resized_crop_box(*jpeg.header_size(data), local.rng)
    k = jpeg.dct_scale(ch, cw, 224, 224)
    y0, x0 = top // k, left // k
    return jpeg.region_image(data, k, y0, x0, -(-(top + ch) // k) - y0, -(-(left + cw) // k) - x0)

  return one


def decoders() -> dict[str, Callable[[bytes], np.ndarray]]:
  """Decode-only functions by name, those that run here."""
  out = {name: (lambda data, n=name: jpeg.decode(data, 1, n)) for name in jpeg.available_decoders()}
  out["pillow 1/2 (draft)"] = lambda data: jpeg.decode(data, 2, "pillow")
  if jpeg.turbojpeg() is None:
    print(f"turbojpeg left out: {jpeg.turbojpeg_error()}")
  else:
    out["turbojpeg, the crop's blocks only"] = _region_decoder()
  return out


def file_batches(paths: list[str], *, batch: int, workers: int, decode: Callable) -> Iterator[int]:
  """Read `batch` files and run `decode` on each one's bytes on `workers` threads, endlessly, with
  no Grain, batching or labels around it."""
  def one(path):
    with open(path, "rb") as f:
      return decode(f.read())

  i = 0
  with ThreadPoolExecutor(workers) as pool:
    while True:
      chunk = [paths[(i + j) % len(paths)] for j in range(batch)]
      i += batch
      list(pool.map(one, chunk))
      yield batch


def kernels_only(size: int = 224, exact: bool = False) -> Callable[[bytes], np.ndarray]:
  """resnet_jax's per-image work alone: `fast_random_resized_crop` (the box from the header, the
  decode, the crop's antialiased resize, the flip), one generator per thread. Its rate is the most a
  pipeline built on these kernels could reach, whatever surrounds them."""
  local = threading.local()

  def one(data: bytes) -> np.ndarray:
    if not hasattr(local, "rng"):
      local.rng = np.random.default_rng(threading.get_ident())
    return input_pipeline.fast_random_resized_crop(data, local.rng, size, exact=exact)

  return one


# ----------------------------------------------------------------------------------------------
# The resize alone, one thread: each candidate against PIL's (torchvision's) output of the same crop.

def _tent_matrix(in_size: int, out_size: int) -> np.ndarray:
  """PIL's bilinear filter as an (out_size, in_size) matrix: a tent max(f, 1) input pixels wide around
  each output pixel's centre, its weights normalised over the pixels inside the image."""
  f = in_size / out_size
  support = max(f, 1.0)
  centers = (np.arange(out_size) + 0.5) * f
  x = np.arange(in_size) + 0.5
  weights = np.clip(1 - np.abs(x[None] - centers[:, None]) / support, 0, None)
  return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


def numpy_separable(crop: np.ndarray, size: int) -> np.ndarray:
  """PIL's filter in float32 numpy: the rows, then the columns, as two matrix products."""
  h, w, c = crop.shape
  rows = _tent_matrix(h, size) @ crop.astype(np.float32).reshape(h, w * c)  # (size, w * c)
  # Columns: w to the front, so that the second pass is one (size, w) @ (w, size * c) product too.
  cols = _tent_matrix(w, size) @ rows.reshape(size, w, c).transpose(1, 0, 2).reshape(w, size * c)
  out = cols.reshape(size, size, c).transpose(1, 0, 2)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _opencv(interpolation: str) -> Callable[[np.ndarray, int], np.ndarray]:
  import cv2
  cv2.setNumThreads(1)
  flag = getattr(cv2, interpolation)
  return lambda crop, size: cv2.resize(crop, (size, size), interpolation=flag)


def resizers() -> dict[str, Callable[[np.ndarray, int], np.ndarray]]:
  """The candidates for training's crop resize, by name."""
  return {
      "PIL bilinear (torchvision's PIL path; exact_input=True)":
          lambda crop, size: np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR)),
      "PIL reduce() + bilinear (reducing_gap=2)": lambda crop, size: np.asarray(
          Image.fromarray(crop).resize((size, size), Image.BILINEAR, reducing_gap=2.0)),
      "OpenCV INTER_LINEAR": _opencv("INTER_LINEAR"),
      "OpenCV INTER_AREA": _opencv("INTER_AREA"),
      "image_ops.resize_box (OpenCV blur + bilinear warp; the default)":
          lambda crop, size: image_ops.resize_box(crop, None, size, size),
      "numpy separable, PIL's filter (float32 matrix products)": numpy_separable,
  }


def accelerator_resize(crops: list[np.ndarray], size: int, pad: int = 512) -> tuple[float, list]:
  """DALI's split: the host pads each decoded crop into a pad x pad buffer and builds the filter
  matrices, a jitted step resizes the batch (two batched matrix products). Returns (ms per image
  for the jitted resize on this machine's CPU, outputs); what it would cost on an accelerator needs
  one, and the host then ships pad^2 x 3 bytes per image instead of size^2 x 3."""
  import jax
  import jax.numpy as jnp
  fits = [c for c in crops if max(c.shape[:2]) <= pad]
  buffers = np.zeros((len(fits), pad, pad, 3), np.uint8)
  rows = np.zeros((len(fits), size, pad), np.float32)
  cols = np.zeros((len(fits), size, pad), np.float32)
  for i, crop in enumerate(fits):
    h, w = crop.shape[:2]
    buffers[i, :h, :w] = crop
    rows[i, :, :h], cols[i, :, :w] = _tent_matrix(h, size), _tent_matrix(w, size)

  @jax.jit
  def resize(images, rows, cols):
    out = jnp.einsum("bow,bhwc->bhoc", cols, jnp.einsum("boh,bhwc->bowc", rows,
                                                        images.astype(jnp.float32)))
    return jnp.clip(jnp.round(out), 0, 255).astype(jnp.uint8)

  resize(buffers[:2], rows[:2], cols[:2]).block_until_ready()  # Compiled once per batch shape.
  outputs, start = [], time.perf_counter()
  for i in range(0, len(fits) - len(fits) % 2, 2):
    outputs.extend(np.asarray(resize(buffers[i:i + 2], rows[i:i + 2], cols[i:i + 2])))
  return (time.perf_counter() - start) / max(len(outputs), 1) * 1e3, list(zip(fits, outputs))


def random_crops(images: list[np.ndarray], draws: int, seed: int = 0) -> list[np.ndarray]:
  """`draws` crops of each image, drawn as torchvision's RandomResizedCrop draws them."""
  rng = np.random.default_rng(seed)
  crops = []
  for image in images:
    for _ in range(draws):
      top, left, ch, cw = input_pipeline.random_resized_crop_box(*image.shape[:2], rng)
      crops.append(np.ascontiguousarray(image[top:top + ch, left:left + cw]))
  return crops


def _psnr(got: np.ndarray, want: np.ndarray) -> float:
  mse = np.mean((got.astype(np.float64) - want.astype(np.float64)) ** 2)
  return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def compare_resizes(sets: dict[str, list[np.ndarray]], size: int = 224) -> None:
  """Prints, per resizer: ms per resize (one thread) and PSNR from PIL's output (median, worst) on
  each set of crops."""
  names = list(sets)
  print(f"| resize of a random-resized crop to {size} px, one thread | "
        + " | ".join(f"{n}: ms | median dB | worst dB" for n in names) + " |")
  print("|---|" + "---:|---:|---:|" * len(names))
  reference = {n: [np.asarray(Image.fromarray(c).resize((size, size), Image.BILINEAR)) for c in crops]
               for n, crops in sets.items()}
  for name, fn in resizers().items():
    cells = []
    for n, crops in sets.items():
      start = time.perf_counter()
      outs = [fn(c, size) for c in crops]
      ms = (time.perf_counter() - start) / len(crops) * 1e3
      psnrs = [_psnr(o, r) for o, r in zip(outs, reference[n])]
      cells.append(f"{ms:.2f} | {statistics.median(psnrs):.1f} | {min(psnrs):.1f}")
    print(f"| {name} | " + " | ".join(cells) + " |")
  cells = []
  for n, crops in sets.items():
    ms, pairs = accelerator_resize(crops, size)
    want = {id(c): r for c, r in zip(crops, reference[n])}
    psnrs = [_psnr(o, want[id(c)]) for c, o in pairs]
    cells.append(f"{ms:.2f} | {statistics.median(psnrs):.1f} | {min(psnrs):.1f}")
  print("| jitted resize (PIL's filter as matrices, crops padded to 512 px; run on this CPU, crops "
        "above 512 px left out) | " + " | ".join(cells) + " |")


# ----------------------------------------------------------------------------------------------
# Timing.

def _cpu_seconds() -> float:
  """CPU time used so far by this process and its children (DataLoader and Grain workers): images
  per CPU-second is the per-core rate, and stays meaningful on a machine that others share."""
  try:
    import psutil
  except ImportError:
    return math.nan
  me = psutil.Process()
  total = 0.0
  for p in [me] + me.children(recursive=True):
    try:
      t = p.cpu_times()
      total += t.user + t.system
    except psutil.NoSuchProcess:
      pass
  return total


def run(pipelines: dict[str, Callable[[], Iterator[int]]], *, windows: int, batches: int,
        warmup: int = 2, warmup_seconds: float = 0.0, rounds: int = 1) -> dict[str, tuple[float, float]]:
  """(median images/s, median images per CPU-second) of each pipeline over `windows` windows of
  `batches` batches in each of `rounds` rounds (the second in reverse order, so that no pipeline
  always runs first or last). One pipeline runs at a time; each is warmed up for `warmup` batches
  and at least `warmup_seconds`, so that worker start-up, and the batches its workers made before the
  first timed window (prefetch buffers: up to 4 batches per DataLoader worker, several per Grain
  worker), are not counted as the rate of the window."""
  walls: dict[str, list] = {name: [] for name in pipelines}
  cpus: dict[str, list] = {name: [] for name in pipelines}
  order = list(pipelines)
  for r in range(rounds):
    for name in order if r % 2 == 0 else order[::-1]:
      it = pipelines[name]()
      start = time.perf_counter()
      done = 0
      while done < warmup or time.perf_counter() - start < warmup_seconds:
        next(it)
        done += 1
      for _ in range(windows):
        start, start_cpu = time.perf_counter(), _cpu_seconds()
        images = sum(next(it) for _ in range(batches))
        walls[name].append(images / (time.perf_counter() - start))
        used = _cpu_seconds() - start_cpu  # Counted in clock ticks: 0 for a very short window.
        cpus[name].append(images / used if used > 0 else math.nan)
      it.close()
  return {name: (statistics.median(walls[name]), statistics.median(cpus[name])) for name in pipelines}


def measure(root: str, paths: list[str], *, workers: int, batch: int, prepared: dict[int, str],
            **timing) -> dict[str, float]:
  """images/s of every pipeline at `workers` workers; `prepared` maps a `--max-size` to its copy."""
  kw = dict(batch=batch, workers=workers)
  pipelines = {
      OURS: lambda: resnet_jax_batches(root, **kw),
      "resnet_jax torchvision (processes, fast decode)":
          lambda: resnet_jax_batches(root, processes=True, **kw),
      "resnet_jax torchvision (threads, fast decode), exact_input=True (PIL's resize)":
          lambda: resnet_jax_batches(root, exact_input=True, **kw),
      "resnet_jax torchvision (threads, full decode)":
          lambda: resnet_jax_batches(root, fast_decode=False, **kw),
      OURS_PAPER: lambda: resnet_jax_batches(root, augment="paper", **kw),
      "resnet_jax paper (threads, full decode)":
          lambda: resnet_jax_batches(root, augment="paper", fast_decode=False, **kw),
      THEIRS: lambda: torchvision_batches(root, normalize=False, **kw),
      "torchvision DataLoader, reference recipe (float out)":
          lambda: torchvision_batches(root, normalize=True, **kw),
      TV_PAPER: lambda: torchvision_batches(root, paper=True, **kw),
  }
  for size, copy in prepared.items():
    pipelines[f"resnet_jax torchvision (threads, fast decode), `prepare --max-size {size}` copy"] = (
        lambda copy=copy: resnet_jax_batches(copy, **kw))
    pipelines[f"the same, `prepare --max-size {size} --format array_record` copy"] = (
        lambda copy=copy: resnet_jax_batches(copy + "_records", records=True, **kw))
  pipelines[KERNELS] = lambda: file_batches(paths, decode=kernels_only(), **kw)
  pipelines[KERNELS + ", exact_input"] = lambda: file_batches(paths, decode=kernels_only(exact=True),
                                                              **kw)
  for name, fn in decoders().items():
    pipelines[f"decode only: {name}"] = lambda fn=fn: file_batches(paths, decode=fn, **kw)
  return run(pipelines, **timing)


def print_table(results: dict[int, dict[str, tuple[float, float]]]) -> None:
  counts = sorted(results)
  print("| pipeline | " + " | ".join(f"{n} worker{'s' * (n > 1)}: img/s | img/CPU-s" for n in counts)
        + " |")
  print("|---|" + "---:|---:|" * len(counts))
  for name in results[counts[0]]:
    cells = " | ".join(f"{results[n][name][0]:,.0f} | {results[n][name][1]:,.0f}" for n in counts)
    print(f"| {name} | {cells} |")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", type=int, default=768)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
  parser.add_argument("--batches", type=int, default=8, help="batches per timed window")
  parser.add_argument("--windows", type=int, default=5, help="timed windows per pipeline and round")
  parser.add_argument("--warmup", type=int, default=4, help="untimed batches before the windows")
  parser.add_argument("--warmup-seconds", type=float, default=2.0,
                      help="warm up for at least this long too (worker start-up, prefetch buffers)")
  parser.add_argument("--rounds", type=int, default=1,
                      help="rounds over all pipelines, every other one in reverse order")
  parser.add_argument("--sides", default="300,500", help="smallest,largest side of the photos")
  parser.add_argument("--prepared", default="", help="comma-separated --max-size values: also time "
                                                      "a `resnet-jax prepare` copy of the photos")
  parser.add_argument("--resize-draws", type=int, default=4,
                      help="crops per image for the side-by-side resize table (0: no table)")
  args = parser.parse_args(argv)
  counts = [int(n) for n in args.workers.split(",")]
  with tempfile.TemporaryDirectory() as tmp:
    root = os.path.join(tmp, "photos")
    paths = write_photo_jpegs(root, args.images, sides=tuple(int(s) for s in args.sides.split(",")))
    prepared = {}
    for size in (int(s) for s in args.prepared.split(",") if s):
      prepared[size] = os.path.join(tmp, f"prepared_{size}")
      for out, format in ((prepared[size], "folder"), (prepared[size] + "_records", "array_record")):
        prepare.prepare(prepare.folder_items(root), out, max_size=size, progress=False, format=format)
    results = {n: measure(root, paths, workers=n, batch=args.batch, prepared=prepared,
                          windows=args.windows, batches=args.batches, warmup=args.warmup,
                          warmup_seconds=args.warmup_seconds, rounds=args.rounds)
               for n in counts}
    # After the pipelines: its jitted resize starts JAX's threads, which the DataLoader must not fork.
    if args.resize_draws:
      from skimage import data
      photos = [getattr(data, name)() for name in PHOTOS]
      compare_resizes({
          "the files": random_crops([np.asarray(Image.open(p).convert("RGB")) for p in paths[:100]],
                                    args.resize_draws),
          "scikit-image's photos": random_crops([p if p.ndim == 3 else np.stack([p] * 3, -1)
                                                 for p in photos], 2 * args.resize_draws)})
  print_table(results)
  ours, theirs = OURS, THEIRS
  n = max(counts)
  for m in counts:  # The paper's augmentation against torchvision doing the same.
    print(f"paper augmentation at {m} worker{'s' * (m > 1)}: resnet_jax/torchvision = "
          f"{results[m][OURS_PAPER][0] / results[m][TV_PAPER][0]:.2f}x images/s, "
          f"{results[m][OURS_PAPER][1] / results[m][TV_PAPER][1]:.2f}x per CPU-second")
  for row in [ours] + [name for name in results[n] if "`prepare --max-size" in name]:
    per_core = results[n][row][1]
    print(f"per core (images per CPU-second at {n} workers), {row}: {per_core:,.0f}, torchvision "
          f"{results[n][theirs][1]:,.0f} ({per_core / results[n][theirs][1]:.2f}x); 16 cores x "
          f"{per_core:,.0f} = {16 * per_core:,.0f} img/s against ResNet-50 training's ~5,600-7,200 "
          f"(H100, bf16)")
  print(f"ceiling (resnet_jax's per-image kernels alone, no pipeline): "
        f"{results[n][KERNELS][0] / results[n][theirs][0]:.2f}x torchvision's images/s, "
        f"{results[n][KERNELS][1] / results[n][theirs][1]:.2f}x per CPU-second at {n} workers")
  print(f"input pipeline: resnet_jax/torchvision = {results[n][ours][0] / results[n][theirs][0]:.2f}x "
        f"at {n} workers")
  return 0


if __name__ == "__main__":
  sys.exit(main())
