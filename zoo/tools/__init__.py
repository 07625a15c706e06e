"""Command-line tools on top of the rest: per-layer summaries with receptive fields
(``python -m zoo.tools.summary``; the rows and CLI in ``summary``, the table in
``summary_render``, the receptive-field and output-size arithmetic and its tracker in
``receptive_field``), the speed benchmark (``python -m zoo.tools.bench``), and the commands
zoo-train and zoo-evaluate (``train``, ``evaluate``), which the checkout's train.py and
evaluate.py run too."""
