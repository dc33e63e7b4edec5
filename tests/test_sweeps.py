"""Sweeps: W&B's file format checked before training, W&B's engine's suggestions, offline
sweeps read back from their W&B runs, and vectorized trials against one-at-a-time ones."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml
from PIL import Image
from scipy import stats

from experiments import registry
from experiments import sweep as sweep_main
from genjax import cli, data, run, sweeps, wandb_logging
from genjax import workdir as workdirs
from genjax.config import AutoencoderConfig, ConfigError
from genjax.steps import vae as vae_steps
from tests.conftest import write_idx_dataset

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "experiments" / "sweeps"
CONFIGS = {name: e.Config for name, e in sweep_main.EXPERIMENTS.items()}
COMMAND = ["${env}", "${interpreter}", "-m", "experiments.NAME", "${args}"]


def _spec(experiment="autoencoder", **fields):
    command = [c.replace("NAME", experiment) for c in COMMAND]
    return {"program": f"experiments/{experiment}.py", "command": command, **fields}


def _write(tmp_path, spec, name="sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return path


def _all(sweep, seed=0, limit=1000):
    """Suggestions until the engine has none (or `limit`), each recorded as finished."""
    records = []
    while len(records) < limit:
        params = sweeps.suggest(sweep, records, seed)
        if params is None:
            break
        records.append(sweeps.TrialRecord(len(records), params, state="finished"))
    return [r.params for r in records]


def test_shipped_sweep_files_are_wandb_agent_ready():
    files = sorted(SHIPPED.glob("*.yaml"))
    assert {"autoencoder_latent.yaml", "vae_latent.yaml"} <= {f.name for f in files}
    for path in files:
        sweep = sweeps.load(path, CONFIGS)
        command = sweep.spec["command"]
        # `wandb agent` runs this from the repository root; ${args} becomes --field=value.
        assert command[:2] == ["${env}", "${interpreter}"] and command[-1] == "${args}"
        assert command[2:4] == ["-m", f"experiments.{sweep.experiment}"]
        assert (ROOT / sweep.spec["program"]).is_file()
    latent = sweeps.load(SHIPPED / "autoencoder_latent.yaml", CONFIGS)
    assert latent.method == "grid" and latent.experiment == "autoencoder"
    assert latent.parameters["latent_dim"]["values"] == [2, 10, 100]
    assert latent.metric["name"] == "val/loss" and latent.metric["goal"] == "minimize"


def test_trial_flags_are_the_wandb_agents_args():
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    params = {"latent_dim": 10, "learning_rate": 0.0003, "progress": False, "seed": 7}
    params["latent_activation"] = "tanh"
    agent = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    assert sweeps.trial_flags(params) == agent["args"]
    config = cli.parse(AutoencoderConfig, agent["args"])
    assert (config.latent_dim, config.learning_rate, config.progress) == (10, 0.0003, False)
    assert (config.seed, config.latent_activation) == (7, "tanh")


def test_grid_enumerates_exactly_the_product(tmp_path):
    spec = _spec(
        method="grid",
        parameters={
            "latent_dim": {"values": [2, 10, 100]},
            "learning_rate": {"values": [0.001, 0.0003]},
            "latent_activation": {"value": "relu"},
        },
    )
    sweep = sweeps.load(_write(tmp_path, spec), CONFIGS)
    trials = _all(sweep)
    got = [(t["latent_dim"], t["learning_rate"]) for t in trials]
    assert sorted(got) == sorted(itertools.product([2, 10, 100], [0.001, 0.0003]))
    assert len(set(got)) == len(got) == sweep.grid_size() == 6
    assert all(t["latent_activation"] == "relu" for t in trials)


def test_values_valid_only_beside_other_settings_load(tmp_path):
    """A value is checked for its type when the file loads, not against the defaults:
    iwae_samples=50 is refused beside the default --iwae_chunk=100, not beside chunk 50."""
    spec = _spec(
        "vae",
        method="grid",
        parameters={"iwae_chunk": {"value": 50}, "iwae_samples": {"values": [50, 150]}},
    )
    trials = _all(sweeps.load(_write(tmp_path, spec), CONFIGS))
    assert sorted(t["iwae_samples"] for t in trials) == [50, 150]
    spec["parameters"]["iwae_samples"] = {"values": [50, "many"]}
    with pytest.raises(sweeps.SweepError, match="parameter iwae_samples: .*'many'"):
        sweeps.load(_write(tmp_path, spec), CONFIGS)


def test_random_draws_follow_their_distributions_and_repeat_from_the_seed(tmp_path):
    spec = _spec(
        "vae",
        method="random",
        parameters={
            "learning_rate": {"distribution": "log_uniform_values", "min": 0.0001, "max": 0.1},
            "beta": {"distribution": "uniform", "min": 0.0, "max": 2.0},
            "latent_dim": {"distribution": "int_uniform", "min": 2, "max": 5},
            "likelihood": {"values": ["mse", "bernoulli"]},
        },
    )
    sweep = sweeps.load(_write(tmp_path, spec), CONFIGS)
    n = 300
    trials = _all(sweep, seed=0, limit=n)
    lr = np.array([t["learning_rate"] for t in trials])
    beta = np.array([t["beta"] for t in trials])
    dims = np.array([t["latent_dim"] for t in trials])
    assert lr.min() >= 1e-4 and lr.max() <= 0.1 and 0 <= beta.min() and beta.max() <= 2
    # log(lr) ~ U(log 1e-4, log 0.1); beta ~ U(0, 2); each integer 2..5 and choice alike.
    log_span = math.log(0.1) - math.log(1e-4)
    assert stats.kstest(np.log(lr), stats.uniform(math.log(1e-4), log_span).cdf).pvalue > 1e-3
    assert stats.kstest(beta, stats.uniform(0, 2).cdf).pvalue > 1e-3
    assert set(dims) == {2, 3, 4, 5} and all(type(t["latent_dim"]) is int for t in trials)
    assert stats.chisquare(np.bincount(dims)[2:]).pvalue > 1e-3
    assert 0.4 < np.mean([t["likelihood"] == "mse" for t in trials]) < 0.6
    # Reproducible from the seed, and a different seed draws differently.
    assert _all(sweep, seed=0, limit=20) == trials[:20]
    assert _all(sweep, seed=1, limit=20) != trials[:20]


def test_bayes_proposals_repeat_from_the_seed_and_stay_in_bounds(tmp_path):
    spec = _spec(
        method="bayes",
        metric={"name": "val/loss", "goal": "minimize"},
        parameters={"learning_rate": {"min": 0.0001, "max": 0.01}},
    )
    sweep = sweeps.load(_write(tmp_path, spec), CONFIGS)

    def propose(seed):
        records = []
        for i in range(6):
            params = sweeps.suggest(sweep, records, seed)
            loss = (math.log10(params["learning_rate"]) + 3) ** 2  # Best at 1e-3.
            records.append(sweeps.TrialRecord(i, params, state="finished", metric=loss))
        return [r.params["learning_rate"] for r in records]

    first = propose(0)
    assert first == propose(0)
    assert all(1e-4 <= x <= 1e-2 for x in first)


def test_hyperband_stops_a_trial_that_trails_the_others_at_a_band(tmp_path):
    spec = _spec(
        method="grid",
        metric={"name": "val/loss", "goal": "minimize"},
        early_terminate={"type": "hyperband", "min_iter": 2, "eta": 2},
        parameters={"latent_dim": {"values": [2, 10, 100]}},
    )
    sweep = sweeps.load(_write(tmp_path, spec), CONFIGS)

    def record(index, losses, state):
        history = {str(step): v for step, v in enumerate(losses, 1)}
        return sweeps.TrialRecord(index, {"latent_dim": 2}, state=state, history=history)

    done = [record(0, [1.0, 0.5, 0.4], "finished"), record(1, [1.0, 0.6, 0.5], "finished")]
    # Past the band at 2 epochs (eta 2: the top half goes on), the best value so far must
    # beat the median of all trials' values logged just after the band.
    assert sweeps.should_stop(sweep, done, record(2, [1.0, 0.9, 0.9], "running"))
    assert not sweeps.should_stop(sweep, done, record(2, [1.0, 0.3, 0.2], "running"))
    assert not sweeps.should_stop(sweep, done, record(2, [1.0, 0.9], "running"))  # Not yet.


BAD_FILES = [
    (_spec(method="hyperopt", parameters={"latent_dim": {"values": [2]}}), "grid, random or bayes"),
    (
        _spec(method="grid", parameters={"latent_size": {"values": [2]}}),
        "'latent_size' is not a setting of experiments.autoencoder",
    ),
    (
        _spec(method="grid", parameters={"learning_rate": {"min": 0.0001, "max": 0.1}}),
        "disallowed type with grid search",
    ),
    (
        _spec(method="grid", parameters={"latent_dim": {"values": [2, "two"]}}),
        "expected an integer",
    ),
    (
        _spec(method="grid", parameters={"latent_activation": {"values": ["relu", "gelu"]}}),
        "Expected one of",
    ),
    (
        "program: experiments/autoencoder.py\nmethod: random\nparameters:\n"
        "  learning_rate: {distribution: log_uniform_values, min: 1e-4, max: 1.0e-2}\n",
        "write 1.0e-3",
    ),
    (_spec(method="grid", paramters={"latent_dim": {"values": [2]}}), "unknown key(s) paramters"),
    (_spec(method="grid", parameters={"workdir": {"values": ["a"]}}), "set by the sweep runner"),
    (
        _spec(method="random", parameters={"latent_dim": {"min": 2.0, "max": 10.0}}),
        "integer setting",
    ),
    (
        {"program": "train.py", "method": "grid", "parameters": {"x": {"values": [1]}}},
        "cannot tell which experiment",
    ),
    (
        _spec(method="bayes", parameters={"learning_rate": {"min": 0.0001, "max": 0.1}}),
        "need a `metric:`",
    ),
    ("method: grid\nparameters: [unclosed\n", "not valid YAML"),
    (
        "program: experiments/autoencoder.py\nmethod: grid\nparameters:\n"
        "  latent_dim:\n    values: [2]\n  latent_dim:\n    values: [10]\n",
        "sweep.yaml:6:3: not valid YAML: key 'latent_dim' is given twice",
    ),
]


@pytest.mark.parametrize("spec,message", BAD_FILES)
def test_a_bad_sweep_file_is_refused_with_its_reason(tmp_path, spec, message):
    with pytest.raises(sweeps.SweepError) as e:
        sweeps.load(_write(tmp_path, spec), CONFIGS)
    assert message in str(e.value)
    assert "sweep.yaml" in str(e.value)  # Names the file.


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """640 real training and 200 test images as IDX files."""
    return write_idx_dataset(tmp_path_factory.mktemp("data"), n_train=640, n_test=200)


def _trial_flags(small_data, **overrides):
    flags = dict(
        data_dir=small_data,
        data_source="idx",
        wandb_mode="offline",
        epochs=2,
        steps_per_epoch=10,
        latent_points=100,
        eval_samples=0,  # No FID: no feature network of the repository's runs/.
        progress="false",
    )
    return [f"--{k}={v}" for k, v in {**flags, **overrides}.items()]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--latent_dim=5"], "--latent_dim is swept by"),
        (["--wandb_group=x"], "--wandb_group is set per trial"),
        (["--vectorize"], "differ in latent_dim"),
        (["--count=-1"], "--count=-1"),
        (["--hidden_dim=0"], "--hidden_dim=0"),
    ],
)
def test_bad_input_fails_before_any_trial_trains(tmp_path, small_data, extra, message, capsys):
    workdir = tmp_path / "sweep"
    argv = [str(SHIPPED / "autoencoder_latent.yaml"), f"--workdir={workdir}"]
    assert sweep_main.main(argv + _trial_flags(small_data) + extra) == 2
    assert message in capsys.readouterr().err
    assert not list(workdir.glob("trial-*"))


def test_a_distribution_reaching_invalid_settings_is_refused(tmp_path, capsys):
    spec = _spec(
        method="random",
        run_cap=3,
        parameters={"learning_rate": {"distribution": "uniform", "min": 0.0, "max": 0.01}},
    )
    assert sweep_main.main([str(_write(tmp_path, spec)), f"--workdir={tmp_path / 's'}"]) == 2
    err = capsys.readouterr().err
    assert "parameter learning_rate: min: --learning_rate=0.0" in err and "positive" in err
    assert not (tmp_path / "s" / "sweep.json").exists()


def test_random_search_without_an_end_is_refused(tmp_path, capsys):
    spec = _spec(
        method="random", parameters={"seed": {"distribution": "int_uniform", "min": 0, "max": 9}}
    )
    assert sweep_main.main([str(_write(tmp_path, spec)), f"--workdir={tmp_path / 's'}"]) == 2
    assert "give --count N, or run_cap" in capsys.readouterr().err


def test_a_wandb_agent_trial_gets_its_own_workdir(monkeypatch):
    config = AutoencoderConfig()
    assert workdirs.workdir_for(config, "autoencoder") == Path("runs/autoencoder").resolve()
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    monkeypatch.setenv("WANDB_RUN_ID", "run9")
    assert workdirs.workdir_for(config, "autoencoder") == Path("runs/sweeps/abc123/run9").resolve()


@pytest.mark.slow
def test_offline_sweep_of_three_trials_reads_back_and_resumes(
    tmp_path, small_data, wandb_home, capsys
):
    workdir = tmp_path / "sweep"
    argv = [str(SHIPPED / "autoencoder_latent.yaml"), f"--workdir={workdir}"]
    argv += _trial_flags(small_data)
    # Two trials now, the third when the same command runs again without --count.
    assert sweep_main.main([*argv, "--count=2"]) == 0
    assert sorted(p.name for p in workdir.glob("trial-*")) == ["trial-000", "trial-001"]
    assert sweep_main.main(argv) == 0
    out = capsys.readouterr().out

    state = json.loads((workdir / "sweep.json").read_text())
    group = f"autoencoder_latent-{state['sweep_id']}"
    assert [t["params"]["latent_dim"] for t in state["trials"]] == [2, 10, 100]
    assert all(t["state"] == "finished" for t in state["trials"])
    losses = {}
    for trial in state["trials"]:
        trial_dir = Path(trial["workdir"])
        summary = json.loads((trial_dir / "summary.json").read_text())
        assert summary["config"]["latent_dim"] == trial["params"]["latent_dim"]
        assert summary["val/loss"] == trial["metric"]
        (run_dir,) = wandb_logging.find_run_dirs(trial_dir)  # One W&B run per trial.
        back = wandb_logging.read_run(run_dir)
        assert back["state"] == "finished" and back["group"] == group
        assert back["config"]["latent_dim"] == trial["params"]["latent_dim"]
        assert [h["_step"] for h in back["history"]] == [1, 2]
        assert back["summary"]["val/loss"] == pytest.approx(trial["metric"])
        losses[trial["index"]] = trial["metric"]
        assert f"trial-{trial['index']:03d}" in out

    best = min(losses, key=losses.get)
    # One W&B run holds the comparison; each invocation resumes it (offline: a folder each).
    first, summary_dir = wandb_logging.find_run_dirs(workdir / "summary")
    back = wandb_logging.read_run(summary_dir)
    assert back["run_id"] == wandb_logging.read_run(first)["run_id"] == state["summary_run_id"]
    assert back["job_type"] == "sweep" and back["group"] == group
    # One step per comparison, never the same twice across the two invocations.
    steps = [h["_step"] for d in (first, summary_dir) for h in wandb_logging.read_run(d)["history"]]
    assert steps == [1, 2] and state["summary_step"] == 2
    assert back["summary"]["best_trial"] == best
    logged = back["history"][-1]
    assert logged["sweep/trials._type"] == "table-file" and logged["sweep/trials.nrows"] == 3
    assert logged["sweep/comparison_images._type"] == "image-file"
    table = json.loads((summary_dir / "files" / logged["sweep/trials.path"]).read_text())
    assert [row[:2] for row in table["data"]] == [[0, 2], [1, 10], [2, 100]]
    assert [row[2] for row in table["data"]] == pytest.approx([losses[i] for i in range(3)])
    # The reconstruction error per latent size, from each trial's summary.json.
    assert table["columns"][3:5] == ["eval/recon_mse", "eval/recon_psnr"]
    for row, trial in zip(table["data"], state["trials"], strict=True):
        summary = json.loads((Path(trial["workdir"]) / "summary.json").read_text())
        assert row[3] == summary["eval/recon_mse"] and row[4] == summary["eval/recon_psnr"]
    picture = np.asarray(Image.open(workdir / "comparison.png"))
    assert picture.shape[0] > 4 * 28 and picture.shape[1] > 10 * 28  # Four rows of ten.
    assert f"*{best}" in out.replace(" ", "")  # The printed table marks the best trial.


@pytest.mark.slow
def test_vectorized_trials_match_the_same_trials_one_at_a_time(tmp_path, small_data, wandb_home):
    # Three random trials that differ in seed, learning rate and KL weight: the vmapped axes.
    spec = _spec(
        "vae",
        method="random",
        metric={"name": "val/loss", "goal": "minimize"},
        parameters={
            "seed": {"distribution": "int_uniform", "min": 0, "max": 1000},
            "learning_rate": {"distribution": "log_uniform_values", "min": 0.0003, "max": 0.003},
            "beta": {"distribution": "uniform", "min": 0.5, "max": 2.0},
        },
    )
    path = _write(tmp_path, spec)
    flags = _trial_flags(small_data, hidden_dim=64, steps_per_dispatch=4)
    results = {}
    for mode in ("one_at_a_time", "vectorized"):
        workdir = tmp_path / mode
        extra = ["--vectorize"] if mode == "vectorized" else []
        assert (
            sweep_main.main([str(path), f"--workdir={workdir}", "--count=3", *flags, *extra]) == 0
        )
        state = json.loads((workdir / "sweep.json").read_text())
        results[mode] = state["trials"]
    one, vec = results["one_at_a_time"], results["vectorized"]
    assert [t["params"] for t in one] == [t["params"] for t in vec]
    assert len({t["params"]["seed"] for t in one}) == 3
    for a, b in zip(one, vec, strict=True):
        sa = json.loads((Path(a["workdir"]) / "summary.json").read_text())
        sb = json.loads((Path(b["workdir"]) / "summary.json").read_text())
        for key in ("train/loss", "val/loss", "val/kl_loss", "val/reconstruction_loss"):
            assert sb[key] == pytest.approx(sa[key], rel=1e-4), key
        _, _, state_a = registry.restore(a["workdir"])
        experiment, config_b, state_b = registry.restore(b["workdir"])
        dataset = experiment.load_data(config_b)
        assert int(state_a.step) == int(state_b.step) == 20
        jax.tree.map(
            lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5),
            state_a.params,
            state_b.params,
        )
        assert float(state_b.hparams["beta"]) == pytest.approx(b["params"]["beta"])
        # Each vectorized trial is still its own finished W&B run with its own history.
        (run_dir,) = wandb_logging.find_run_dirs(b["workdir"])
        back = wandb_logging.read_run(run_dir)
        assert back["state"] == "finished" and [h["_step"] for h in back["history"]] == [1, 2]
        assert back["config"]["beta"] == pytest.approx(b["params"]["beta"])
        # Its latent scatter holds its own codes (the vectorized validation pass keeps
        # every trial's): z_mean of the first test images under its final state.
        table_file = run_dir / "files" / back["history"][-1]["latent_space_scatter_table.path"]
        points = np.array([row[:2] for row in json.loads(table_file.read_text())["data"]])
        shown, _ = dataset.fixed_test_examples(len(points))
        z_mean, _ = vae_steps.encode(state_b, data.scale(shown, vae_steps.PIXEL_RANGE))
        np.testing.assert_allclose(points, z_mean, rtol=1e-4, atol=1e-5)


def test_only_trials_that_differ_in_values_vectorize():
    from experiments import autoencoder, dcgan
    from genjax.config import DCGANConfig

    ok = [
        AutoencoderConfig(seed=s, learning_rate=lr, workdir=f"t{s}")
        for s, lr in [(0, 1e-3), (1, 3e-4)]
    ]
    run.check_vectorizable(ok, autoencoder.NAME, autoencoder.VECTOR_FIELDS)
    with pytest.raises(ConfigError, match="differ in latent_dim"):
        run.check_vectorizable(
            [AutoencoderConfig(), AutoencoderConfig(latent_dim=10)],
            autoencoder.NAME,
            autoencoder.VECTOR_FIELDS,
        )
    gans = [DCGANConfig(), DCGANConfig(learning_rate=1e-3)]
    with pytest.raises(ConfigError, match="a dcgan run does not vectorize"):
        run.check_vectorizable(gans, dcgan.NAME, dcgan.VECTOR_FIELDS)


@pytest.mark.slow
def test_hyperband_ends_a_trailing_trial_early(tmp_path, small_data, wandb_home):
    # Two good learning rates, then a tiny one: after its 2nd epoch (past the band at 1) its
    # best loss trails the median at that band, and the engine stops it there.
    spec = _spec(
        method="grid",
        metric={"name": "val/loss", "goal": "minimize"},
        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2},
        parameters={"learning_rate": {"values": [0.003, 0.002, 0.00001]}},
    )
    workdir = tmp_path / "sweep"
    flags = _trial_flags(small_data, epochs=4, steps_per_epoch=5)
    assert sweep_main.main([str(_write(tmp_path, spec)), f"--workdir={workdir}", *flags]) == 0
    trials = json.loads((workdir / "sweep.json").read_text())["trials"]
    assert [t["state"] for t in trials] == ["finished", "finished", "stopped"]
    assert [len(t["history"]) for t in trials] == [4, 4, 2]
    stopped = Path(trials[2]["workdir"])
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["early_terminated"] is True and summary["epoch"] == 2
    assert trials[2]["metric"] == summary["val/loss"]
    (run_dir,) = wandb_logging.find_run_dirs(stopped)
    back = wandb_logging.read_run(run_dir)
    assert back["state"] == "finished" and [h["_step"] for h in back["history"]] == [1, 2]
    assert back["summary"]["early_terminated"] is True
    # It ended at a checkpoint: the state of step 2 * 5 is saved.
    experiment, config, state = registry.restore(stopped)
    assert int(state.step) == 10
    # Stopped early is finished: the same trial again trains nothing.
    assert experiment.train([config]) == [summary]


@pytest.mark.slow
def test_a_failed_trial_still_gets_the_comparison_logged(tmp_path, small_data, wandb_home):
    """A trial that ends on a NaN has no metric: its row's numeric cells stay empty, which
    W&B's table takes (text there made W&B drop the table and the picture)."""
    spec = _spec(
        method="grid",
        metric={"name": "val/loss", "goal": "minimize"},
        parameters={"learning_rate": {"values": [0.001, 1e30]}},
    )
    workdir = tmp_path / "sweep"
    argv = [str(_write(tmp_path, spec)), f"--workdir={workdir}"]
    assert sweep_main.main([*argv, *_trial_flags(small_data, epochs=1)]) == 1
    (summary_dir,) = wandb_logging.find_run_dirs(workdir / "summary")
    logged = wandb_logging.read_run(summary_dir)["history"][-1]
    assert logged["sweep/comparison_images._type"] == "image-file"
    table = json.loads((summary_dir / "files" / logged["sweep/trials.path"]).read_text())
    columns, rows = table["columns"], table["data"]
    state, metric = columns.index("state"), columns.index("val/loss")
    assert [row[state] for row in rows] == ["finished", "failed"]
    assert math.isfinite(rows[0][metric]) and rows[1][metric] is None
    assert rows[1][columns.index("eval/recon_mse")] is None


def test_a_sweep_folder_in_use_is_refused_before_any_trial(tmp_path, small_data, capsys):
    workdir = tmp_path / "sweep"
    argv = [str(SHIPPED / "autoencoder_latent.yaml"), f"--workdir={workdir}"]
    with workdirs.owned(workdir):  # Another sweep runner holds it.
        assert sweep_main.main([*argv, *_trial_flags(small_data)]) == 2
    assert f"{workdir} is in use by process" in capsys.readouterr().err
    assert not (workdir / "sweep.json").exists() and not list(workdir.glob("trial-*"))
