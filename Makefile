# Shortcuts; README's Quick start spells out the commands in full.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install train test test-all lint format gpu-check gpu-stage

$(PY):
	python3 -m venv $(VENV)

install: $(PY)
	$(VENV)/bin/pip install -q -e ".[dev,onnx]"

train: install
	$(PY) train.py

test: install
	$(PY) -m pytest -m "not slow" -q

test-all: install
	$(PY) -m pytest -q

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The GPU check (docs/benchmarks.md, "GPU"): pytest -m gpu and every GPU speed target, each
# step within its time budget, into bench/ (JSON, logs, summary.md). On the GPU machine, from the
# repository root: `make gpu-check PY=python3`; on an offline machine it installs the wheels that
# `make gpu-stage` put in .whl/ and unpacks the MNIST it gzipped. Without CUDA it stops at once;
# `GPU_CHECK_DRY=1 make gpu-check` rehearses every step on the CPU at toy sizes.
gpu-check:
	@$(PY) -m benchmarks.gpu_check

# Downloads, while online, the packages and MNIST an offline GPU machine needs: the packages its
# Python 3.12 lacks, as wheels (.whl/), and MNIST's four IDX files gzipped (data/MNIST/gz/); both
# are git-ignored. The versions are this venv's, which the tests ran with.
GPU_WHEELS := hydra-core==1.3.8 omegaconf==2.3.1 torchinfo==1.8.0
GPU_PLATFORMS := $(foreach p,manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1,--platform $(p)_x86_64)
gpu-stage: $(PY)
	mkdir -p .whl
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $(GPU_PLATFORMS) -d .whl $(GPU_WHEELS)
	@# antlr4-python3-runtime 4.9.3 (hydra-core pins 4.9.*) is an sdist only: build its wheel.
	$(PY) -m pip wheel -q --no-deps antlr4-python3-runtime==4.9.3 -w .whl
	$(PY) -m benchmarks.gpu_check --stage
