"""Evaluate a checkpoint: python evaluate.py ckpt_path=PATH [split=val] [attack=fgsm]
[predict=DIR_OR_FILES] [export=onnx] [key=value ...]

In a checkout; an installed zoo (pip install .) has the same command as zoo-evaluate
(zoo/tools/evaluate.py)."""

from zoo.tools.evaluate import main

if __name__ == "__main__":
    main()
