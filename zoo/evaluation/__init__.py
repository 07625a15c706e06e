"""What ``python evaluate.py`` runs (``run.evaluate``): untrusted checkpoint loading, the task
module's own test loop with report callbacks, attacks, predictions and ONNX export."""
