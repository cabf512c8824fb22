"""Tests of `resnet-jax prepare` (resnet_jax/prepare.py): counts, sizes, unreadable files, resumption, TFDS."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from resnet_jax import cli, input_pipeline, prepare


def _jpeg(path, h, w, seed):
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), np.uint8)
  Image.fromarray(small).resize((w, h), Image.BICUBIC).save(path, quality=90)


def _folder(root):
  """train/{cat,dog}: 5 large JPEGs, 2 small ones, 1 PNG, 1 broken file, 1 text file."""
  sizes = [(90, 120), (120, 70), (64, 64), (200, 41), (50, 300), (20, 30), (32, 25)]
  for i, (h, w) in enumerate(sizes):
    d = root / "train" / ("cat" if i % 2 else "dog")
    d.mkdir(parents=True, exist_ok=True)
    _jpeg(d / f"{i}.jpg", h, w, i)
  Image.fromarray(np.full((80, 60), 7, np.uint8)).save(root / "train" / "cat" / "gray.png")
  (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
  (root / "train" / "dog" / "notes.txt").write_text("not an image")
  return 9  # image files, the broken one included


def test_prepare_accounts_for_every_image(tmp_path, capsys):
  count = _folder(tmp_path / "src")
  out = tmp_path / "out"
  code = cli.main(["prepare", str(tmp_path / "src"), str(out), "--max-size", "32", "--workers", "2"])
  assert code == 1  # One image could not be read: the run says so in its exit status.
  line = capsys.readouterr().out.strip().splitlines()[-1]
  assert line.startswith(f"{count} images in {out}") and "8 written" in line and "1 unreadable" in line
  listed = (out / prepare.UNREADABLE).read_text().splitlines()
  assert len(listed) == 1 and listed[0].startswith(str(tmp_path / "src" / "train" / "dog" / "broken.jpg"))
  outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
  assert len(outputs) == count - 1 and "train/cat/gray.png.jpg" in outputs
  for path in out.rglob("*.jpg"):
    with Image.open(path) as image:
      assert image.format == "JPEG" and min(image.size) <= 32
  # Sizes as torchvision's Resize(32): shorter side 32, longer side truncated.
  with Image.open(out / "train" / "cat" / "3.jpg") as image:
    assert image.size == (32, int(32 * 200 / 41))
  # A JPEG already small enough is copied, not re-encoded.
  assert (out / "train/cat/5.jpg").read_bytes() == (tmp_path / "src/train/cat/5.jpg").read_bytes()
  manifest = json.loads((out / prepare.MANIFEST).read_text())
  assert manifest["complete"] and (manifest["images"], manifest["unreadable"]) == (count, 1)
  source = input_pipeline.get_source("folder", "train", data_dir=str(out))
  assert len(source) == count - 1 and source.classes == ["cat", "dog"]
  assert cli.main(["prepare", str(tmp_path / "src"), str(tmp_path / "src" / "small")]) == 2
  assert "inside the image folder" in capsys.readouterr().err


def test_prepare_resumes_after_an_interruption(tmp_path, monkeypatch):
  _folder(tmp_path / "src")
  items = prepare.folder_items(str(tmp_path / "src"))
  reference = tmp_path / "whole"
  prepare.prepare(items, str(reference), max_size=32, workers=1, progress=False)

  out = tmp_path / "out"
  write, calls = prepare._write, []

  def interrupted(path, data):
    calls.append(path)
    if len(calls) == 4:  # As a Ctrl-C or kill after three images: the fourth is half-written.
      with open(f"{path}.partial", "wb") as f:
        f.write(data[:10])
      raise KeyboardInterrupt
    write(path, data)

  monkeypatch.setattr(prepare, "_write", interrupted)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(items, str(out), max_size=32, workers=1, progress=False)
  monkeypatch.setattr(prepare, "_write", write)
  assert len(list(out.rglob("*.jpg"))) == 3

  with pytest.raises(ValueError, match="prepared with .*'max_size': 32"):
    prepare.prepare(items, str(out), max_size=64, workers=1, progress=False)
  summary = prepare.prepare(items, str(out), max_size=32, workers=2, progress=False)
  assert (summary.images, summary.already_done, summary.written, len(summary.unreadable)) == (9, 3, 5, 1)
  for path in reference.rglob("*.jpg"):  # The same files as a run that was never interrupted.
    assert (out / path.relative_to(reference)).read_bytes() == path.read_bytes()
  assert len(list(out.rglob("*.jpg"))) == 8


def test_prepare_from_a_tfds_dataset(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6):
    items = prepare.tfds_items("cifar10", ["train"])
    labels = [input_pipeline.get_source("tfds", "train", dataset="cifar10")[i]["label"]
              for i in range(6)]
    images = [input_pipeline.get_source("tfds", "train", dataset="cifar10")[i]["image"]
              for i in range(6)]
  summary = prepare.prepare(items, str(tmp_path), max_size=16, progress=False)
  assert (summary.images, summary.written) == (6, 6)
  for i, (label, image) in enumerate(zip(labels, images)):
    path = tmp_path / "train" / str(label) / f"{i:08d}.jpg"  # mock cifar10's class names are '0'..'9'
    with Image.open(path) as out:
      assert out.size == (16, 16)
      # JPEG of a 2x bilinear shrink of the same image: far closer to it than to another image.
      want = np.asarray(Image.fromarray(image).resize((16, 16), Image.BILINEAR), np.float64)
      assert np.abs(np.asarray(out, np.float64) - want).mean() < 20
