"""The docs that code writes stay current."""

from experiments import config_reference


def test_the_config_reference_is_every_entry_points_current_help():
    """docs/config.md is rewritten by `python -m experiments.config_reference`."""
    written = config_reference.PATH.read_text()
    assert written == config_reference.reference(), "run: python -m experiments.config_reference"
    for module, _ in config_reference.ENTRY_POINTS:
        assert f"## `python -m {module}`" in written
