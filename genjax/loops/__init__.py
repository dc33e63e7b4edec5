"""The two host loops: epochs of fused steps (epochs.py) and iterations with image points
(iterations.py). Each trains runs that genjax.run.open restored."""
