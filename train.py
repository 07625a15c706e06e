"""Train a zoo model: python train.py [experiment=lenet_mnist] [key=value ...]

In a checkout; an installed zoo (pip install .) has the same command as zoo-train
(zoo/tools/train.py)."""

from zoo.tools.train import main

if __name__ == "__main__":
    main()
