"""images.load_image: high bit depths scaled (not clipped) to 8 bits, every error naming its file."""

import numpy as np
import pytest
from PIL import Image

from resnet_jax.data import images, input_pipeline, transforms


@pytest.fixture(scope="module")
def sixteen_bit(tmp_path_factory):
  """(path, uint16 pixels) of a 16-bit greyscale PNG spanning the whole 0..65535 range."""
  pixels = np.random.default_rng(0).integers(0, 65536, (9, 11), np.uint16)
  pixels[0, :2] = [0, 65535]
  path = tmp_path_factory.mktemp("png16") / "deep.png"
  Image.fromarray(pixels).save(path)
  return str(path), pixels


def test_sixteen_bit_png_is_scaled(sixteen_bit):
  path, pixels = sixteen_bit
  with Image.open(path) as image:
    assert image.mode.startswith("I")  # What PIL reads: the case convert('RGB') clips to 255.
  want = np.round(pixels / 65535.0 * 255.0).astype(np.uint8)
  np.testing.assert_array_equal(images.load_image(path, 1)[..., 0], want)
  np.testing.assert_array_equal(images.load_image(path, 3), np.stack([want] * 3, -1))


def test_float_tiff_is_scaled(tmp_path):
  pixels = np.random.default_rng(1).random((6, 7)).astype(np.float32)
  path = tmp_path / "float.tif"
  Image.fromarray(pixels, mode="F").save(path)
  want = np.round(pixels.astype(np.float64) * 255.0).astype(np.uint8)
  np.testing.assert_array_equal(images.load_image(path, 1)[..., 0], want)
  Image.fromarray(pixels * 3, mode="F").save(path)
  with pytest.raises(images.ImageError, match=r"float.tif: float pixels must lie in \[0, 1\]"):
    images.load_image(path)


def test_predict_and_training_folders_see_the_same_scaled_pixels(sixteen_bit, tmp_path):
  path, pixels = sixteen_bit
  want = np.round(pixels / 65535.0 * 255.0).astype(np.uint8)
  # predict: resize 9 -> 9 (no resampling), crop 9, [0, 1] scale, mean 0, std 1.
  got = transforms.ImageClassification(crop_size=9, resize_size=9, mean=(0, 0, 0), std=(1, 1, 1))(path)
  np.testing.assert_allclose(got[0], np.stack([want[:, 1:10]] * 3, -1) / 255.0, atol=1e-7)
  for name in ("a", "b"):
    (tmp_path / "train" / name).mkdir(parents=True)
  Image.fromarray(pixels).save(tmp_path / "train" / "a" / "deep.png")
  Image.new("L", (4, 4)).save(tmp_path / "train" / "b" / "flat.png")
  source = input_pipeline.get_source("folder", "train", data_dir=str(tmp_path), image_shape=(9, 9, 1))
  np.testing.assert_array_equal(source[0]["image"][..., 0], want)


def test_folder_source_names_a_broken_file(tmp_path):
  for name in ("a", "b"):
    (tmp_path / name).mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / name / "ok.png")
  (tmp_path / "b" / "zz.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  source = input_pipeline.ImageFolderSource(str(tmp_path))
  with pytest.raises(images.ImageError, match=r"b/zz.jpg: cannot decode"):
    source[2]


def test_decoded_decodes_whole_and_reduces_only_large_jpegs(tmp_path):
  """A file that only its header can be read of (a truncated JPEG, PIL opens it) fails in `decoded`,
  naming it; a JPEG larger than `shorter_side` decodes at the smallest DCT scale that keeps it, the
  pixels libjpeg's scaled decode gives (Pillow's `draft`), and a smaller one in full."""
  import io
  rng = np.random.default_rng(0)
  buffer = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (64, 80, 3), np.uint8)).save(buffer, "JPEG")
  data = buffer.getvalue()
  (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
  with Image.open(tmp_path / "cut.jpg") as header:
    assert header.size == (80, 64)  # Opening reads the header only: not enough to trust a file.
  with pytest.raises(images.ImageError, match=r"cut.jpg: cannot decode the image"):
    images.decoded(str(tmp_path / "cut.jpg"), str(tmp_path / "cut.jpg"))
  with images.decoded(io.BytesIO(data), "x", shorter_side=20) as image:
    assert image.size == (40, 32)  # 1/2: at 1/4 the shorter side would be 16 < 20.
    with Image.open(io.BytesIO(data)) as reference:
      reference.draft("RGB", (40, 32))
      np.testing.assert_array_equal(np.asarray(image), np.asarray(reference))
  for side in (None, 64, 100):
    with images.decoded(io.BytesIO(data), "x", shorter_side=side) as image:
      assert image.size == (80, 64)
