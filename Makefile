# `make train` and `make test` each work on a fresh machine: they create .venv and install first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/digits

.PHONY: train test install install-test

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The library and the main job need no torch.
$(VENV)/.core: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

# Where torch comes from: the default index gives Linux torch's CUDA build (several GB with its nvidia-*
# wheels); `make test TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes the 192 MB CPU build.
TORCH_INDEX ?=
TORCH_FROM := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))

# Tests compare against torchvision on CPU. torchvision is installed without its dependencies so that
# pip cannot swap the CPU build of torch for a multi-GB CUDA one (see resnet_jax/_torchvision.py).
$(VENV)/.test: $(VENV)/.core
	$(BIN)/pip install -q $(TORCH_FROM) "torch==2.13.0"
	$(BIN)/pip install -q --no-deps $(TORCH_FROM) "torchvision==0.28.0"
	# timm and transformers, the references for timm's ResNets and transformers' layout, name torch and
	# torchvision as needs: --no-deps keeps pip from replacing the CPU builds above; their other needs
	# are in the test extra.
	$(BIN)/pip install -q --no-deps "timm==1.0.31" "transformers==5.23.0"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.core
install-test: $(VENV)/.test

train: $(VENV)/.core
	$(BIN)/python train.py --config configs/digits.py --workdir $(WORKDIR)

test: $(VENV)/.test
	$(BIN)/python -m pytest -n 2 --timeout 900 tests
