"""ILSVRC-2012: the datamodule (``imagenet``, a class-folder datamodule of
``zoo.data.image_folder`` with ImageNet's layouts and names), a synthetic stand-in for throughput
(``imagenet_synthetic``), and the helpers that class-folder data shares: reading and decoding
the image files (``io``), the folder and archive layouts, class lists and split subsets
(``layout``), and the preprocessing (``transforms``). The input pipeline's benchmark is
benchmarks/imagenet_pipeline.py."""
