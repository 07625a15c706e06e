"""The GPU tests (``pytest -m gpu``): every CUDA path, run by ``make gpu-check`` on the GPU
machine; skipped where there is no CUDA."""
