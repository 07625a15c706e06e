"""MNIST: the IDX files and where they come from (``files``), digit classification
(``classification``) and digits segmented on canvases (``segmentation``)."""
