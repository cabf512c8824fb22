"""Smoke tests of benchmarks/throughput.py and input_pipeline.py: it runs end to end and reports what it measured (no timing asserted)."""

import json
import os
import re
import subprocess
import sys

import pytest


def test_throughput_benchmark_runs(tmp_path, torchvision, capsys, benchmark):
  out = tmp_path / "throughput.json"
  code = benchmark("throughput").main([
      "--models", "resnet18", "--batch", "4", "--image-size", "32", "--dtype", "float32",
      "--steps", "1", "--windows", "2", "--warmup", "1", "--frameworks", "jax,torch_eager",
      "--out", str(out)])
  assert code == 0
  results = json.loads(out.read_text())
  assert {(r["mode"], r["framework"]) for r in results["runs"]} == {
      ("train", "jax"), ("train", "torch_eager"), ("infer", "jax"), ("infer", "torch_eager")}
  assert all(r["images_per_s"] > 0 and len(r["windows"]) == 2 for r in results["runs"])
  assert "| resnet18 | train |" in capsys.readouterr().out


def test_input_pipeline_benchmark_runs(torchvision, capsys, benchmark):
  """Every pipeline runs on the same generated photos; the last line is the issue's summary line."""
  assert benchmark("input_pipeline").main(["--images", "8", "--batch", "2", "--workers", "1",
                                       "--windows", "1", "--batches", "1",
                                       "--warmup", "1", "--warmup-seconds", "0",
                                       "--resize-draws", "1"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert "| torchvision DataLoader, uint8 out |" in "\n".join(lines)
  assert "| image_ops.resize_box (OpenCV blur + bilinear warp; the default) |" in "\n".join(lines)
  assert "| torchvision DataLoader, paper augmentation (float out, lighting) |" in "\n".join(lines)
  assert any(re.fullmatch(r"paper augmentation at 1 worker: resnet_jax/torchvision = \d+\.\d\dx "
                          r"images/s, (\d+\.\d\d|nan)x per CPU-second", line) for line in lines)
  assert re.fullmatch(r"input pipeline: resnet_jax/torchvision = \d+\.\d\dx at 1 workers", lines[-1])


def test_verify_gpu_without_a_gpu_is_one_line_naming_the_cpu_flag():
  import importlib.util
  if importlib.util.find_spec("jax_cuda12_plugin") or importlib.util.find_spec("jax_cuda13_plugin"):
    pytest.skip("a CUDA plugin is installed: the GPU path is the one to check here")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "verify_gpu.py"),
                         "--archs", "resnet18"], cwd=root, capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=root), timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("verify_gpu.py: error: JAX finds no GPU")
  assert "--device cpu" in proc.stderr and "Traceback" not in proc.stderr
