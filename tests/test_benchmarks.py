"""Smoke test of benchmarks/throughput.py: it runs end to end and reports what it measured (no timing asserted)."""

import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name):
  spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_throughput_benchmark_runs(tmp_path, torchvision, capsys):
  out = tmp_path / "throughput.json"
  code = _load("throughput").main([
      "--models", "resnet18", "--batch", "4", "--image-size", "32", "--dtype", "float32",
      "--steps", "1", "--windows", "2", "--warmup", "1", "--frameworks", "jax,torch_eager",
      "--out", str(out)])
  assert code == 0
  results = json.loads(out.read_text())
  assert {(r["mode"], r["framework"]) for r in results["runs"]} == {
      ("train", "jax"), ("train", "torch_eager"), ("infer", "jax"), ("infer", "torch_eager")}
  assert all(r["images_per_s"] > 0 and len(r["windows"]) == 2 for r in results["runs"])
  assert "| resnet18 | train |" in capsys.readouterr().out


def test_input_pipeline_benchmark_runs(tmp_path):
  bench = _load("input_pipeline")
  bench.write_jpegs(str(tmp_path), 12, classes=3)
  assert len(list(tmp_path.glob("class_*/*.jpg"))) == 12
  result = bench.measure(str(tmp_path), batch=4, threads=2, image_size=32, batches=2, windows=2)
  assert result["images_per_s"] > 0 and len(result["windows"]) == 2
