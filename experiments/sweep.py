"""Runs a W&B sweep file here, without the W&B server, then compares its trials.

    python -m experiments.sweep experiments/sweeps/autoencoder_latent.yaml --epochs=5
    python -m experiments.sweep experiments/sweeps/vae_beta.yaml --vectorize
    python -m experiments.sweep FILE [--count N] [--workdir DIR] [--sweep_seed S]
                                     [--vectorize] [--field=value ...]

The same file runs on W&B's service: `wandb sweep FILE`, then `wandb agent ID`. Here, trials
are suggested by W&B's own engine (the `sweeps` package), each trial is its own W&B run (in
the group SWEEPNAME-ID) with its own workdir DIR/trial-NNN and summary.json, and extra
`--field=value` flags go to every trial. DIR/sweep.json records the trials; running the same
command again resumes the sweep (finished trials are kept, an interrupted one resumes from
its checkpoint). --vectorize trains trials that differ only in values (seed, learning rate,
KL weight) together as one vmapped program. At the end: a table of trial -> metric and one
picture of the same test images through every trial, printed, saved and logged to W&B.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from experiments import registry
from genjax import cli, images, run, sharding, sweeps, wandb_logging
from genjax import workdir as workdirs
from genjax.config import ConfigError

# The experiments a sweep can run: those with a picture to compare their trials by.
EXPERIMENTS = {n: m for n, m in registry.EXPERIMENTS.items() if m.comparison is not None}
SHOWN = 10  # Test images per row of the comparison picture.
PROG = "python -m experiments.sweep FILE.yaml"


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
    """Runs the trials of a W&B sweep file here and compares them. These are the runner's
    own flags; every other --field=value goes to every trial (see `python -m
    experiments.NAME --help` for the experiment's)."""

    count: int = 0  # Trials to run (or resume) now; 0 = until the sweep ends.
    workdir: str = ""  # The sweep's folder (trials in DIR/trial-NNN); "" = runs/sweeps/<name>.
    sweep_seed: int = 0  # Seeds the random and bayes suggestions (not the trials' --seed).
    vectorize: bool = False  # Train trials that differ only in values as one vmapped program.

    def validate(self) -> None:
        if self.count < 0:
            raise ConfigError(f"--count={self.count}: must be 0 (no limit) or more")
        if not 0 <= self.sweep_seed < 2**32:
            raise ConfigError(f"--sweep_seed={self.sweep_seed}: must be in [0, 2**32)")


def split_args(argv: list[str]) -> tuple[str, RunnerConfig, list[str]]:
    """FILE, the runner's flags, and the flags for every trial."""
    if "--help" in argv or "-h" in argv:
        cli.parse(RunnerConfig, ["--help"], prog=PROG)  # Prints the runner's flags; exits.
    if not argv or argv[0].startswith("--"):
        raise ConfigError("usage: python -m experiments.sweep FILE.yaml [--count N] [--field=v]")
    runner_names = {f.name for f in dataclasses.fields(RunnerConfig)}
    mine, theirs = [], []
    args = list(argv[1:])
    while args:
        arg = args.pop(0)
        name, sep, _ = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        name = name.replace("-", "_")
        target = mine if name in runner_names else theirs
        target.append(arg)
        takes_next = not sep and name and name != "vectorize"
        if takes_next and args and not args[0].startswith("--"):
            target.append(args.pop(0))
    return argv[0], cli.parse(RunnerConfig, mine, prog=PROG), theirs


class SweepRunner:
    """One sweep in its workdir: plan, run and compare trials; sweep.json is its memory."""

    def __init__(self, path: str, runner: RunnerConfig, trial_args: list[str]):
        configs = {name: e.Config for name, e in EXPERIMENTS.items()}
        self.sweep = sweeps.load(path, configs)
        self.experiment = EXPERIMENTS[self.sweep.experiment]
        self.runner = runner
        self.trial_args = list(trial_args)
        # The trials' shared flags must make a valid config on their own, before anything runs.
        self.base = self._parse(self.trial_args)
        given = {a[2:].partition("=")[0].replace("-", "_") for a in trial_args if a[:2] == "--"}
        for name in sorted(given & set(self.sweep.parameters)):
            raise ConfigError(f"--{name} is swept by {path}; remove it from the command line")
        for name in sorted(given & set(sweeps.RUNNER_FIELDS)):
            raise ConfigError(
                f"--{name} is set per trial by the sweep (workdir: --workdir is the sweep's "
                "folder, each trial gets DIR/trial-NNN)"
            )
        self._check_bounds(path)
        unbounded = self.sweep.method != "grid" and not (runner.count or self.sweep.run_cap)
        if unbounded:
            raise ConfigError(
                f"{self.sweep.method} search never ends by itself: give --count N, "
                f"or run_cap: N in {path}"
            )
        if runner.vectorize and self.sweep.method == "bayes":
            raise ConfigError(
                "--vectorize needs all trials up front, and bayes picks each trial from the "
                "previous ones' results; use grid or random, or drop --vectorize"
            )
        if runner.vectorize and self.sweep.early_terminate:
            raise ConfigError(
                "--vectorize trains the trials together, so early_terminate cannot stop one; "
                "drop one of them"
            )
        self.workdir = Path(runner.workdir or os.path.join("runs", "sweeps", self.sweep.name))
        self.workdir = self.workdir.resolve()
        workdirs.check_workdir(self.workdir, self.base.min_free_disk_mb)
        self.owner = contextlib.ExitStack()  # The sweep's folder is this process's (close()).
        if sharding.is_main_process():
            self.owner.enter_context(workdirs.owned(self.workdir))
        self.state_path = self.workdir / "sweep.json"
        self.identity = {
            "sweep": self.sweep.spec,
            "experiment": self.sweep.experiment,
            "trial_args": self.trial_args,
            "sweep_seed": runner.sweep_seed,
        }
        self.records: list[sweeps.TrialRecord] = []
        self.summary_run_id = ""
        self.summary_step = 0  # The summary run's last step: each comparison logs the next.
        # On several hosts the first process reads sweep.json (and draws a new sweep's id)
        # and the others follow it, so all plan the same trials; it alone writes the files.
        main = sharding.is_main_process()
        saved = self.state_path.read_text() if main and self.state_path.exists() else None
        self.sweep_id, saved = sharding.from_first_process([os.urandom(4).hex(), saved])
        if saved is not None:
            self._read_state(json.loads(saved))

    def _check_bounds(self, path: str) -> None:
        """A distribution's ends must be valid settings: a bad draw would stop a sweep late."""
        for name, p in self.sweep.parameters.items():
            if p.get("distribution") not in sweeps.VALUE_BOUNDED:
                continue
            for end in ("min", "max"):
                flag = f"--{name}={sweeps.format_value(p[end])}"
                try:
                    self._parse([*self.trial_args, flag])
                except ConfigError as e:
                    raise ConfigError(f"{path}: parameter {name}: {end}: {e}") from None

    # sweep.json ------------------------------------------------------------------------
    def _read_state(self, saved: dict[str, Any]) -> None:
        changed = [k for k, v in self.identity.items() if saved.get(k) != v]
        if changed:
            raise ConfigError(
                f"{self.workdir} holds another sweep (its {', '.join(changed)} differ from this "
                "command's); use another --workdir, or delete that folder to start afresh"
            )
        self.sweep_id = saved["sweep_id"]
        self.summary_run_id = saved.get("summary_run_id", "")
        self.summary_step = saved.get("summary_step", 0)
        self.records = [sweeps.TrialRecord(**r) for r in saved["trials"]]

    def _write_state(self) -> None:
        if not sharding.is_main_process():
            return
        state = {
            **self.identity,
            "sweep_id": self.sweep_id,
            "summary_run_id": self.summary_run_id,
            "summary_step": self.summary_step,
            "trials": [r.to_json() for r in self.records],
        }
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_path)  # Atomic: a kill never leaves half a sweep.json.

    def _parse(self, flags: list[str]):
        """A trial's config from its flags (the shared ones, its parameters, its folder)."""
        return cli.parse(
            self.experiment.Config, flags, prog=f"python -m experiments.{self.sweep.experiment}"
        )

    # trials ----------------------------------------------------------------------------
    @property
    def group(self) -> str:
        return f"{self.sweep.name}-{self.sweep_id}"

    def trial_config(self, record: sweeps.TrialRecord):
        flags = [
            *self.trial_args,
            *sweeps.trial_flags(record.params),
            f"--workdir={record.workdir}",
            f"--wandb_group={self.group}",
            f"--wandb_name={self.group}-{record.index}",
        ]
        try:
            return self._parse(flags)
        except ConfigError as e:
            raise ConfigError(f"trial {record.index} ({_describe(record.params)}): {e}") from None

    def _new_record(self, params: dict[str, Any]) -> sweeps.TrialRecord:
        index = len(self.records)
        record = sweeps.TrialRecord(index, params, workdir=str(self.workdir / f"trial-{index:03d}"))
        self.records.append(record)
        return record

    def _room(self) -> float:
        return (self.sweep.run_cap or math.inf) - len(self.records)

    def plan(self) -> list[sweeps.TrialRecord]:
        """The trials to run now: unfinished ones first, then new suggestions. Grid and random
        trials are all drawn (and checked) here; bayes ones only as results come in."""
        budget = self.runner.count or math.inf
        todo = [r for r in self.records if r.state in ("pending", "running")]
        if self.runner.count:
            todo = todo[: self.runner.count]
        if self.sweep.method != "bayes":
            while len(todo) < budget and self._room() > 0:
                params = sweeps.suggest(self.sweep, self.records, self.runner.sweep_seed)
                if params is None:
                    break
                todo.append(self._new_record(params))
        for record in todo:
            self.trial_config(record)  # Every planned trial's flags checked before training.
        self._write_state()
        return todo

    def run(self) -> list[sweeps.TrialRecord]:
        todo = self.plan()
        if self.runner.vectorize:
            self._run_vectorized(todo)
        else:
            budget = self.runner.count or math.inf
            done = 0
            while todo or (self.sweep.method == "bayes" and done < budget and self._room() > 0):
                if todo:
                    record = todo.pop(0)
                else:
                    params = sweeps.suggest(self.sweep, self.records, self.runner.sweep_seed)
                    record = self._new_record(params)
                    self.trial_config(record)
                self._run_one(record)
                done += 1
        return self.records

    def _early_stop(self, record: sweeps.TrialRecord):
        """Records the metric's history for the engine; hyperband may stop the trial."""
        name = self.sweep.metric["name"] if self.sweep.metric else None

        def early_stop(step: int, metrics) -> bool:
            if name is None or name not in metrics:
                return False
            record.history[str(step)] = float(metrics[name])
            if self.sweep.early_terminate is None:
                return False  # Kept in memory; sweep.json gets it when the trial ends.
            # Hyperband judges this history again after a resume: keep it on disk. (Not
            # for every row otherwise: a DCGAN logs one row per iteration.)
            self._write_state()
            others = [r for r in self.records if r is not record and r.state != "pending"]
            return sweeps.should_stop(self.sweep, others, record)

        return early_stop

    def _run_one(self, record: sweeps.TrialRecord) -> None:
        config = self.trial_config(record)
        print(f"sweep {self.group}: trial {record.index}: {_describe(record.params)}", flush=True)
        record.state = "running"
        self._write_state()
        try:
            (summary,) = self.experiment.train([config], [self._early_stop(record)])
        except run.Interrupted:
            self._write_state()  # Still "running": the same command resumes it.
            raise
        except run.TrainingStopped as e:  # A NaN: W&B's agent, too, goes on to the next.
            summary = {"failure": str(e)}
        self._finish(record, summary)

    def _run_vectorized(self, todo: list[sweeps.TrialRecord]) -> None:
        if not todo:
            return
        configs = [self.trial_config(r) for r in todo]
        run.check_vectorizable(configs, self.experiment.NAME, self.experiment.VECTOR_FIELDS)
        print(f"sweep {self.group}: {len(todo)} trials vectorized", flush=True)
        for record in todo:
            record.state = "running"
        self._write_state()
        summaries = self.experiment.train(configs)
        for record, summary in zip(todo, summaries, strict=True):
            self._finish(record, summary)

    def _finish(self, record: sweeps.TrialRecord, summary: dict[str, Any]) -> None:
        if "failure" in summary:
            record.state, record.error = "failed", summary["failure"]
            self._write_state()
            return
        record.state = "stopped" if summary.get("early_terminated") else "finished"
        if self.sweep.metric:
            name = self.sweep.metric["name"]
            if name not in summary:
                self._write_state()
                logged = ", ".join(k for k in summary if "/" in k)
                raise ConfigError(
                    f"metric {name!r} of {self.sweep.path} is not logged by "
                    f"experiments.{self.sweep.experiment}; it logs: {logged}"
                )
            record.metric = float(summary[name])
        self._write_state()

    # comparison ------------------------------------------------------------------------
    def compare(self) -> dict[str, Any]:
        """The report's comparison: a table and one side-by-side picture, in W&B and here."""
        done = [r for r in self.records if r.state in ("finished", "stopped")]
        names = list(self.sweep.parameters)
        metric = self.sweep.metric["name"] if self.sweep.metric else None
        best = _best(done, self.sweep.metric)
        figures = {r.index: _figures(r) for r in done}
        shown = [k for k in FIGURES if any(k in f for f in figures.values())]
        columns = ["trial", *names, metric or "metric", *shown, "state", "workdir"]
        rows = [
            [
                r.index,
                *(r.params.get(n) for n in names),
                r.metric,
                *(figures.get(r.index, {}).get(k) for k in shown),
                r.state,
                r.workdir,
            ]
            for r in self.records
        ]
        picture = self._picture(done, metric) if done else None
        failed = [r for r in self.records if r.state == "failed"]
        result = {"best": None if best is None else best.index, "failed": len(failed)}
        if not sharding.is_main_process():  # The first process reports, writes and logs.
            return result
        print(_format_table(columns, rows, best))
        if picture is not None:
            images.save_png(picture, self.workdir / "comparison.png")
        self._log_summary(columns, rows, picture, best)
        self._write_state()
        for r in failed:
            print(f"trial {r.index} failed: {r.error}", file=sys.stderr)
        lines = [f"sweep.json:     {self.state_path}"]
        if picture is not None:
            lines.append(f"comparison.png: {self.workdir / 'comparison.png'}")
        print("\n".join(lines))
        return result

    def _picture(self, done: list[sweeps.TrialRecord], metric: str | None) -> np.ndarray:
        rows, labels, originals = [], [], None
        for r in done:
            experiment, config, state = registry.restore(r.workdir)
            dataset = experiment.load_data(config)
            shown, outputs = self.experiment.comparison(config, state, dataset)
            if originals is None and shown is not None:
                originals = shown[:SHOWN]
            rows.append(outputs[:SHOWN])
            value = f"\n{metric} {r.metric:.4g}" if metric and r.metric is not None else ""
            labels.append(f"trial {r.index}: {_describe(r.params)}{value}")
        if originals is not None:
            rows.insert(0, originals)
            labels.insert(0, "test images")
        title = f"sweep {self.sweep.name}: the same inputs through every trial"
        return images.labelled_rows(rows, labels, title)

    def _log_summary(self, columns, rows, picture, best) -> None:
        """One W&B run of job_type "sweep" in the sweep's group holds the comparison, one step
        per comparison: its id and step are in sweep.json before it starts, so a rerun (or
        a kill) never logs a step twice or leaves a run whose id is lost."""
        self.summary_run_id = self.summary_run_id or wandb_logging.new_run_id()
        self.summary_step += 1
        self._write_state()
        wandb_run = wandb_logging.Session(
            directory=self.workdir / "summary",
            config={**self.identity, "sweep_id": self.sweep_id},
            mode=self.base.wandb_mode,
            project=self.base.wandb_project,
            entity=self.base.wandb_entity,
            name=f"{self.group}-summary",
            group=self.group,
            job_type="sweep",
            init_timeout=self.base.wandb_init_timeout,
            run_id=self.summary_run_id,
        )
        table_rows = [[_cell(v) for v in row] for row in rows]
        pictures = {}
        if picture is not None:
            pictures["sweep/comparison_images"] = (picture, "one row per trial")
        tables = {"sweep/trials": (columns, table_rows)}
        wandb_run.log(self.summary_step, {}, images=pictures, tables=tables)
        if best is not None:
            wandb_run.summary({"best_trial": best.index, "best_metric": best.metric, **best.params})
        wandb_run.finish()


def _describe(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={sweeps.format_value(v)}" for k, v in params.items())


def _cell(value: Any) -> Any:
    """A table cell W&B stores as is: numbers, text, or None (an empty cell, which a numeric
    column takes: "" there makes W&B drop the whole row of tables and images)."""
    return value if value is None or isinstance(value, int | float | str) else str(value)


def _best(done: list[sweeps.TrialRecord], metric) -> sweeps.TrialRecord | None:
    scored = [r for r in done if r.metric is not None and math.isfinite(r.metric)]
    if not metric or not scored:
        return None
    sign = -1.0 if metric.get("goal") == "maximize" else 1.0
    return min(scored, key=lambda r: sign * r.metric)


# The evaluation figures a comparison table shows beside the sweep's metric, when the
# trials' summary.json files hold them.
FIGURES = (
    "eval/recon_mse",
    "eval/recon_psnr",
    "eval/fid",
    "eval/precision",
    "eval/recall",
    "eval/iwae_nll",
    "eval/neg_elbo",
)


def _figures(record: sweeps.TrialRecord) -> dict[str, float]:
    path = Path(record.workdir) / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    return {k: summary[k] for k in FIGURES if k in summary}


def _format_table(columns, rows, best) -> str:
    text = [[str(c) for c in columns]]
    for row in rows:
        cells = []
        for v in row:
            cells.append("" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v))
        text.append(cells)
    widths = [max(len(r[i]) for r in text) for i in range(len(columns))]
    lines = []
    for k, cells in enumerate(text):
        mark = "*" if best is not None and k > 0 and rows[k - 1][0] == best.index else " "
        lines.append(mark + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    if best is not None:
        lines.append(f"* best: trial {best.index}")
    return "\n".join(lines)


def run_sweep(argv: list[str]) -> dict[str, Any]:
    path, runner, trial_args = split_args(argv)
    sweep = SweepRunner(path, runner, trial_args)
    with sweep.owner:
        sweep.run()
        outcome = sweep.compare()
    if outcome["failed"]:
        raise run.TrainingStopped(
            f"{outcome['failed']} trial(s) failed (see above and {sweep.state_path})"
        )
    return outcome


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: run_sweep(argv))


if __name__ == "__main__":
    cli.exit_with(main())
