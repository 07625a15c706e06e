"""zoo: the lecture's classic CNNs, faithful to their papers, trained with Lightning and Hydra."""

__version__ = "0.1.0"
