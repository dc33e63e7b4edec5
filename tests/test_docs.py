"""The docs that code writes stay current."""

from experiments import config_reference


def test_the_config_reference_is_every_entry_points_current_help(capsys):
    """docs/config.md is rewritten by `python -m experiments.config_reference`."""
    written = config_reference.PATH.read_text()
    assert written == config_reference.reference(), "run: python -m experiments.config_reference"
    assert config_reference.main(["--check"]) == 0
    assert "is current" in capsys.readouterr().out
    assert config_reference.main(["--chek"]) == 2  # Its own flags are checked like any other.
    assert "--chek" in capsys.readouterr().err


def test_a_stale_reference_is_reported(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "config.md"
    stale.write_text("# Config reference\n")
    monkeypatch.setattr(config_reference, "PATH", stale)
    assert config_reference.main(["--check"]) == 2
    assert "is stale: run python -m experiments.config_reference" in capsys.readouterr().err
    assert config_reference.main([]) == 0 and config_reference.main(["--check"]) == 0
