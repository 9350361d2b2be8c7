"""Running one task of a model: its variants, its capture, and its evaluator on what the family reads.

:mod:`~layerbench.execution.variants` (what runs), :mod:`~layerbench.execution.task_capture` (the batched passes a
task's variants share), :mod:`~layerbench.execution.scoring` (one executor per kind of input). The runner
(:mod:`layerbench.runner`) plans, records and resumes; these are its steps, and never import it.
"""
