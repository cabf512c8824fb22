"""Pretrained weights by name: the table, download once with a hash check, offline errors."""

import hashlib
import os

import chex
import pytest

import resnet_jax
from resnet_jax.weights import convert, hub, verify
from resnet_jax.weights.hub import DownloadError


@pytest.fixture(autouse=True)
def _no_torch_hub_cache(tmp_path, monkeypatch):
  # A real ~/.cache/torch would let fetch() skip the paths these tests exercise.
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture(scope="module")
def resnet18(torch):
  return verify.torchvision_model("resnet18", seed=0)


@pytest.fixture
def published(resnet18, torch, tmp_path, monkeypatch):
  """resnet18's V1 entry pointed at a file:// URL of a checkpoint named with its own hash."""
  source = tmp_path / "server"
  source.mkdir()
  raw = source / "raw.pth"
  torch.save(resnet18.state_dict(), raw)
  digest = hashlib.sha256(raw.read_bytes()).hexdigest()
  path = source / f"resnet18-{digest[:8]}.pth"
  raw.rename(path)
  weights = hub.Weights("resnet18", "IMAGENET1K_V1", path.as_uri(), digest[:8], 256)
  monkeypatch.setitem(hub.WEIGHTS, ("resnet18", "IMAGENET1K_V1"), weights)
  return path


def test_table_is_torchvision_s(torchvision):
  enums = [e for e in vars(torchvision.models).values()
           if isinstance(e, type) and e.__name__.endswith("_Weights")
           and e.__name__.lower().startswith(("resnet", "resnext", "wide_resnet"))]
  seen = set()
  for enum in enums:
    for weights in enum:
      arch = weights.url.rsplit("/", 1)[1].rsplit("-", 1)[0]
      ours = hub.get_weights(arch, weights.name)
      assert ours.url == weights.url
      assert ours.resize_size == weights.transforms.keywords.get("resize_size", 256)
      seen.add((arch, weights.name))
    assert hub.get_weights(arch, "DEFAULT").name == enum.DEFAULT.name
  assert seen == set(hub.WEIGHTS)
  assert hub.get_weights("resnet50", "ResNet50_Weights.IMAGENET1K_V2").resize_size == 232


def test_unknown_weights_names():
  with pytest.raises(ValueError, match="unknown weights 'IMAGENET22K' for resnet50; known: "
                                       "IMAGENET1K_V1, IMAGENET1K_V2"):
    hub.get_weights("resnet50", "IMAGENET22K")
  with pytest.raises(ValueError, match="no weights for 'resnet20'"):
    hub.pretrained("resnet20", "DEFAULT")


def test_download_once_then_cache(published, resnet18, tmp_path):
  cache = tmp_path / "cache"
  model, variables, transform = hub.pretrained("resnet18", "IMAGENET1K_V1", cache=str(cache))
  assert os.listdir(cache) == [published.name]
  assert model.num_classes == 1000 and transform.resize_size == 256
  chex.assert_trees_all_equal(variables, convert.from_torchvision(resnet18))
  published.unlink()  # the second call must not need the source
  chex.assert_trees_all_equal(hub.pretrained("resnet18", "DEFAULT", cache=str(cache)).variables,
                              variables)


def test_url_with_hash_in_its_name(published, tmp_path):
  path = hub.resolve("resnet18", published.as_uri(), str(tmp_path / "cache"))[0]
  assert os.path.basename(path) == published.name


def test_hash_mismatch_caches_nothing(published, tmp_path, monkeypatch):
  wrong = hub.Weights("resnet18", "IMAGENET1K_V1", published.as_uri(), "00000000", 256)
  monkeypatch.setitem(hub.WEIGHTS, ("resnet18", "IMAGENET1K_V1"), wrong)
  cache = tmp_path / "cache"
  with pytest.raises(DownloadError, match="not the published 00000000"):
    hub.pretrained("resnet18", "IMAGENET1K_V1", cache=str(cache))
  assert os.listdir(cache) == []


def test_corrupt_cached_file(published, tmp_path):
  cache = tmp_path / "cache"
  cache.mkdir()
  (cache / published.name).write_bytes(b"half a download")
  with pytest.raises(DownloadError, match="delete the file"):
    hub.pretrained("resnet18", "IMAGENET1K_V1", cache=str(cache))


def test_offline_error_says_how_to_pass_a_local_file(tmp_path, monkeypatch):
  unreachable = hub.Weights("resnet50", "IMAGENET1K_V2", (tmp_path / "nowhere" / "resnet50-11ad3fa6.pth")
                            .as_uri(), "11ad3fa6", 232)
  monkeypatch.setitem(hub.WEIGHTS, ("resnet50", "IMAGENET1K_V2"), unreachable)
  with pytest.raises(DownloadError) as e:
    hub.pretrained("resnet50", "IMAGENET1K_V2", cache=str(tmp_path / "cache"))
  message = str(e.value)
  assert "could not download resnet50 IMAGENET1K_V2" in message
  assert "resnet_jax.pretrained('resnet50', weights='/path/to/resnet50-11ad3fa6.pth')" in message
  assert "--weights /path/to/resnet50-11ad3fa6.pth" in message


def test_torch_hub_cache_is_reused(published, tmp_path):
  torch_cache = tmp_path / "torch_home" / "hub" / "checkpoints"
  torch_cache.mkdir(parents=True)
  published.rename(torch_cache / published.name)
  path, _ = hub.resolve("resnet18", "IMAGENET1K_V1", str(tmp_path / "cache"))
  assert path == str(torch_cache / published.name)


def test_local_file_and_end_to_end_parity(published, resnet18, torchvision, torch):
  # A local file named like torchvision's gets that file's preprocessing; the whole pipeline,
  # photo -> transform -> model, computes what torchvision's does.
  skimage_data = pytest.importorskip("skimage.data")
  from PIL import Image
  model, variables, transform = hub.pretrained("resnet18", str(published))
  photo = Image.fromarray(skimage_data.coffee())
  logits = model.apply(variables, transform(photo))
  preset = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
  with torch.no_grad():
    expected = resnet18(preset(photo)[None]).numpy()
  agreement = verify.compare_logits(logits, expected)
  assert agreement.rel < 1e-5 and agreement.top1 == 1.0, agreement


def test_pretrained_reads_a_workdir_s_spec(digits_workdir):
  """pretrained() on a training workdir: the model and preprocessing its ModelSpec records."""
  from resnet_jax.training import checkpoints
  model, variables, transform = resnet_jax.pretrained(None, digits_workdir)
  _, spec = checkpoints.load_variables(digits_workdir)
  assert (model.in_channels, model.num_classes, tuple(model.stage_sizes)) == (1, 10, (1, 1, 1))
  assert transform == spec.transform() and transform.channels == 1 and transform.crop_size == 16
  with pytest.raises(ValueError, match="holds a resnet20, not a resnet50"):
    resnet_jax.pretrained("resnet50", digits_workdir)
