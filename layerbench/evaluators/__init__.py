"""Evaluators, one per task family that has one: captured states (or the model) in, per-layer score rows out.

Each family's record (:mod:`layerbench.families`) names its evaluator and
says what it reads. An evaluator of a family that reads ``states`` takes
``(states, data, spec, seed, layers=...)``: ``states`` maps a variant name
(``clean`` always, robustness variants when the run asks for them) to the
pooled states ``[K, N, D]`` of the task's texts at one capture site, and
``layers`` gives the layer number of each of the K rows (``0..L``, or
``1..L`` at the ``mlp-input`` site). One whose family reads the ``model``
(``backpatch``, ``consistency``) takes ``(handle, data, spec, seed)`` and runs
the loaded causal language model itself. Both return rows ``metric, layer,
value, stderr, n, higher_is_better`` (plus ``subset``, ``split`` or
``source_layer`` where they set them), built with :mod:`layerbench.results.rows`.
Evaluators never load models or touch disk. ``label-free`` tasks have no
evaluator: their rows are the label-free metric suite's (:mod:`layerbench.metrics.suite`).
"""
