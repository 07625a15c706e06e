"""ILSVRC-2012: reading and decoding the image files (``io``), the folder and archive layouts,
class lists and split subsets (``layout``), the preprocessing (``transforms``), the datamodule
(``datamodule``), a synthetic stand-in for throughput (``synthetic``), and the input pipeline
benchmark (``bench``)."""
