"""Measurements of the zoo, run from the repository root and not installed with it (pyproject's
packages.find includes only ``zoo*``):

- ``python -m benchmarks.gpu_check`` (``make gpu-check``): every CUDA path once and the GPU speed
  targets, each step in a process of its own (``benchmarks.gpu_check_steps``);
- ``python -m benchmarks.step_profile``: where a training step's time goes;
- ``python -m benchmarks.recipe_cost``: what each training-recipe feature costs on the CPU;
- ``python -m benchmarks.imagenet_pipeline``: images/s of the two ImageNet input paths.

What users run to time a model is ``python -m zoo.tools.bench``.
"""
