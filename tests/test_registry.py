"""The registry: every experiment has the parts that sweeps, evaluations and the benchmark use."""

import inspect

import pytest

from experiments import registry

PARTS = ("NAME", "Config", "IDENTITY", "VECTOR_FIELDS", "steps", "load_data", "create_state")
CALLED = ("train", "evaluate")


@pytest.mark.parametrize("name", sorted(registry.EXPERIMENTS))
def test_every_experiment_has_the_registry_parts(name):
    experiment = registry.EXPERIMENTS[name]
    assert experiment.NAME == name
    for part in PARTS + CALLED + ("comparison",):
        assert hasattr(experiment, part), f"experiments.{name} lacks {part}"
    for part in CALLED:
        assert callable(getattr(experiment, part))
    # The benchmark times steps.train_step(state, batch, key) on the steps' pixel range.
    params = list(inspect.signature(experiment.steps.train_step).parameters)
    assert params[:3] == ["state", "batch", "key"]
    assert len(experiment.steps.PIXEL_RANGE) == 2
    assert set(experiment.IDENTITY) <= {f for f in experiment.Config.__dataclass_fields__}
