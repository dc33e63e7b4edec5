"""genjax's speed, measured: `python -m benchmarks.run` (see run.py). Not part of the
library: each module times one thing (timing.py the loops and the matmul ceiling, cases.py
genjax's steps as its experiments run them, floor.py each step's kernels alone, flops.py the
FLOP count, keras_models.py and torch_models.py the same models in those frameworks,
logging_cost.py the share of an experiment's wall time that logging takes)."""
