"""Training: the contract between a trainer and the engine (task), the optimizer and schedule
(optimization), mixed precision (amp), the loop that reads top to bottom (loop), evaluation-only runs
(evaluate_only) and the run that owns its process state (session).

Imports: the standard library and numpy; paddle and paddlenlp inside functions; of the project every
lower layer (configuration, data, models, checkpoints, evaluation, reporting, runtime, speedups).
"""
