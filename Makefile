# Shortcuts; README's Quick start spells out the commands in full.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install train test test-all lint format bench-gpu

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

# The GPU issue's measurements in one go (docs/benchmarks.md), on a machine with a CUDA GPU and
# the package's dependencies already installed: `make bench-gpu PY=python`. Results in bench/.
BENCH := $(PY) -m zoo.bench --device cuda --batch-size 256
bench-gpu:
	mkdir -p bench
	nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > bench/gpu.csv
	$(BENCH) --models resnet18 --precision 32 --json bench/resnet18_fp32.json
	$(BENCH) --models resnet18 --precision bf16 --json bench/resnet18_bf16.json
	$(BENCH) --models resnet18 --precision bf16 --channels-last --json bench/resnet18_bf16_cl.json
	$(BENCH) --models resnet18 --precision bf16 --channels-last --compile --json bench/resnet18_bf16_cl_compile.json
	$(BENCH) --models lenet,alexnet,vgg16,googlenet --precision bf16 --channels-last --json bench/others_bf16_cl.json
	$(PY) -m zoo.data.imagenet_bench --device cuda --workers 16 --batch-size 256 > bench/imagenet_pipeline.md
	$(PY) train.py experiment=lenet_mnist_fast trainer=gpu paths.log_dir=bench/lenet_fast_resident
	$(PY) train.py experiment=lenet_mnist_fast trainer=gpu data.device_resident=false paths.log_dir=bench/lenet_fast_host
