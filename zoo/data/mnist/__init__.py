"""MNIST: the IDX files and where they come from (``files``), digit classification (``mnist``)
and digits segmented on canvases (``mnist_segmentation``)."""
