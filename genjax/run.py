"""A run: one workdir's training, from its first start to its summary.json.

    with run.open("autoencoder", [config], [state], IDENTITY, dataset, total_steps) as (r,):
        ...  # r.state is restored; the loop calls r.log, r.save, r.finish

`open` takes each workdir (refused while another process has it), restores the latest intact
checkpoint into the given initial state, and starts the W&B run that the workdir's earlier
processes logged to. Leaving the `with` finishes W&B: normally, as preempted after a signal
(the same command resumes), or as failed. Several configs that differ only in values held in
the state (a vectorized sweep) are several runs trained as one program; each keeps its own
workdir, checkpoints, W&B run and summary.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from genjax import data, sharding, wandb_logging
from genjax import workdir as workdirs
from genjax.checkpoint import CheckpointError, Checkpoints, check_compatible, tree_digest
from genjax.config import BaseConfig, ConfigError

JOURNAL = "wandb_rows.jsonl"  # Every W&B row the run logged (wandb_logging.Journal).

# Config fields that define any run: a checkpoint made under other values is refused, since
# resuming it would not continue the same run (data order, step grid, optimizer).
BASE_IDENTITY = (
    "dataset",
    "batch_size",
    "seed",
    "steps_per_epoch",
    "steps_per_dispatch",
    "learning_rate",
)
# Fields that never change what is computed: where results go, how W&B names them.
PER_TRIAL_FIELDS = ("workdir", "wandb_name", "wandb_group", "progress")
# summary.json's entries that say where things are, not what the run measured.
SUMMARY_PLACES = ("config", "wandb_run", "data_source", "images", "checkpoints")

# Called with every logged row of scalars: (step, metrics) -> True to end the run early (a
# sweep's early termination); the run then ends at its next checkpoint point.
EarlyStop = Callable[[int, Mapping[str, float]], bool]


class TrainingStopped(RuntimeError):
    """Training ended early; `exit_code` is what the process should exit with."""

    exit_code = 1


class NonFiniteError(TrainingStopped):
    """A NaN or Inf in the metrics: the state is bad and is never checkpointed."""


class Interrupted(TrainingStopped):
    """SIGTERM or SIGINT: a checkpoint was saved and the same command resumes."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclasses.dataclass(frozen=True)
class Keys:
    """Named random streams, each a pure function of the run seed."""

    init: jax.Array
    step: jax.Array  # Folded with state.step inside every train step.
    data: jax.Array  # Folded with the epoch (or step) number for the batches.
    eval: jax.Array  # Fixed, so validation numbers are comparable across epochs.
    sample: jax.Array  # For pictures (generation), fixed across epochs.
    evaluation: jax.Array  # For end-of-run figures (likelihood bounds, FID samples).


def keys(seed: int) -> Keys:
    root = jax.random.key(seed)
    return Keys(*(jax.random.fold_in(root, i) for i in range(len(dataclasses.fields(Keys)))))


def check_vectorizable(configs: Sequence[BaseConfig], name: str, vector_fields) -> None:
    """Refuses trials that differ in a field that changes the compiled program or the loop."""
    allowed = set(vector_fields) | set(PER_TRIAL_FIELDS)
    first = configs[0].to_dict()
    differ = sorted(
        {k for c in configs[1:] for k, v in c.to_dict().items() if v != first[k]} - allowed
    )
    if differ:
        can = (
            f"can vectorize only over {', '.join(vector_fields)}"
            if vector_fields
            else "does not vectorize"
        )
        raise ConfigError(
            f"--vectorize: the trials differ in {', '.join(differ)}, which changes array "
            f"shapes or the training loop; a {name} run {can}. Run the sweep without --vectorize"
        )


def check_finite(metrics: Mapping[str, Any], prefix: str, first_step: int) -> None:
    """Raises NonFiniteError naming the first NaN or Inf (metrics: one value per step)."""
    for name, values in metrics.items():
        values = np.atleast_1d(values)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise NonFiniteError(
                f"{prefix}{name} is {values[bad[0]]} at step {first_step + int(bad[0])}; "
                "training stopped (lower --learning_rate, or check the data)"
            )


class _SignalFlag:
    """Turns SIGTERM/SIGINT into a flag the loop reads between dispatches; restores on exit."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # Not the main thread: leave signals alone.
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # A second signal: stop at once.
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclasses.dataclass(eq=False)
class Run:
    """One workdir while it trains: its config and keys, its restored state, checkpoints,
    W&B run and summary.json. Made by `open`."""

    name: str  # The experiment.
    config: BaseConfig
    workdir: Path
    keys: Keys
    checkpoints: Checkpoints
    state: Any  # The latest intact checkpoint's, or the initial state.
    record: dict[str, Any]  # That checkpoint's record ({} for a new run).
    wandb: wandb_logging.Session | None
    stop: _SignalFlag
    early_stop: EarlyStop | None = None
    summary: dict[str, Any] | None = None  # Once finished (or found finished).
    failure: str = ""  # Set when this run stopped on its own (a NaN) while others go on.
    stopped_early: bool = False  # Set when early_stop asked this run to end.
    # The last W&B step logged: a checkpoint records it, and a resume makes W&B hold every
    # step up to it (wandb_logging.Session.restore_history).
    logged_step: int = 0
    logging_s: float = 0.0  # Seconds the loop spent making pictures and handing over rows.
    started: float = dataclasses.field(default_factory=time.perf_counter)
    data_source: str = ""  # Where the data came from, for summary.json.

    @property
    def image_dir(self) -> Path:
        return self.workdir / "images"

    def train_s(self, wall: float | None = None) -> float:
        """Seconds of training behind the state: the restored checkpoint's, plus this
        process's `wall` seconds (default: since it started training)."""
        if wall is None:
            wall = time.perf_counter() - self.started
        return self.record.get("train_s", 0.0) + wall

    @property
    def training(self) -> bool:
        """Still to train: neither finished nor failed."""
        return self.summary is None and not self.failure

    def save(self, step: int, state: Any, **extra: Any) -> None:
        """Checkpoints a state that passed the NaN guard, with what a resume needs."""
        self.checkpoints.save(
            step,
            state,
            {
                "step": step,
                "wandb_run_id": self.wandb.id,
                "logged_step": self.logged_step,
                "experiment": self.name,
                "config": self.config.to_dict(),
                # An early stop ends a run before its last step: a rerun must know.
                "early_terminated": self.summary is not None and self.stopped_early,
                "train_s": self.train_s(),
                **extra,
            },
        )

    def log(
        self,
        step: int,
        metrics: Mapping[str, Any],
        pictures: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """One W&B step; pictures also go to WORKDIR/images/KEY.png (the latest of each),
        written by W&B's worker thread."""
        start = time.perf_counter()
        pictures = pictures or {}
        self.wandb.log(
            step,
            metrics,
            images=pictures.get("images"),
            scatters=pictures.get("scatters"),
            # Several hosts: the first writes the files (the workdir may be shared).
            save_dir=self.image_dir if sharding.is_main_process() else None,
        )
        self.logging_s += time.perf_counter() - start
        self.logged_step = step

    def timed(self, make: Callable[..., Any], *args: Any) -> Any:
        """make(*args), its seconds counted as logging (time/logging_share): for pictures."""
        start = time.perf_counter()
        try:
            return make(*args)
        finally:
            self.logging_s += time.perf_counter() - start

    def ask_early_stop(self, step: int, metrics: Mapping[str, Any]) -> bool:
        """Shows a row to a sweep's early_stop; remembers a request to stop."""
        if self.early_stop is not None and not self.stopped_early:
            scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
            self.stopped_early = bool(self.early_stop(step, scalars))
        return self.stopped_early

    def finish(self, metrics: Mapping[str, Any], state: Any) -> dict[str, Any]:
        """summary.json: final metrics under their W&B names, config, where the run is."""
        self.wandb.flush()
        wall = time.perf_counter() - self.started
        metrics = {
            **metrics,
            **({"early_terminated": True} if self.stopped_early else {}),
            "time/wall_s": wall,
            # With the processes before a resume: what the run took, for the leaderboard.
            "time/train_s": self.train_s(wall),
            # The loop's logging seconds and the W&B thread's, counted in full although
            # that thread runs beside training: an upper bound of what logging costs.
            "time/logging_share": (self.logging_s + self.wandb.worker_s) / wall,
        }
        self.summary = {
            **metrics,
            "state_sha256": tree_digest(state),
            "config": self.config.to_dict(),
            "wandb_run": self.wandb.describe(),
            "data_source": self.data_source,
            "images": str(self.image_dir),
            "checkpoints": str(self.checkpoints.directory),
        }
        self.wandb.summary(dict(metrics) | {"state_sha256": self.summary["state_sha256"]})
        if sharding.is_main_process():
            (self.workdir / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n")
        return self.summary

    def fail(self, error: BaseException) -> None:
        """Ends this run alone (vectorized trials: the others go on); its W&B run fails."""
        self.failure = f"{type(error).__name__}: {error}; {_kept(self.checkpoints)}"
        print(f"{self.workdir}: {self.failure}", file=sys.stderr)
        self.wandb.summary({"failure": self.failure})
        self.wandb.finish(exit_code=1)


@contextlib.contextmanager
def open(  # noqa: A001 (the module's verb: run.open)
    name: str,
    configs: Sequence[BaseConfig],
    states: Sequence[Any],
    identity: Sequence[str],
    dataset: data.Dataset,
    total_steps: int,
    early_stops: Sequence[EarlyStop | None] | None = None,
    prepare: Callable[[], None] | None = None,
) -> Iterator[list[Run]]:
    """The runs of `configs`, each restored into its initial state (see the module's
    docstring). A run already at total_steps is not trained again: its summary is read
    back, and its W&B run finished if a kill had left it open.

    `prepare` (say, loading the FID feature network) runs once the workdirs are checked and
    before W&B starts, only if a run is left to train: its failure costs no training."""
    early_stops = early_stops or [None] * len(configs)
    with contextlib.ExitStack() as stack:  # Each workdir is this process's until the end.
        stop = stack.enter_context(_SignalFlag())
        runs = []
        try:
            for config, state, early_stop in zip(configs, states, early_stops, strict=True):
                runs.append(_restore(name, config, state, identity, stop, stack))
                runs[-1].early_stop = early_stop
                runs[-1].data_source = dataset.source

            def complete(r):
                return int(r.state.step) >= total_steps or r.record.get("early_terminated")

            _align_steps([r for r in runs if int(r.state.step) < total_steps])
            if prepare is not None and not all(complete(r) for r in runs):
                prepare()
            for r in runs:
                if complete(r):
                    _already_complete(r, dataset)
                else:
                    r.wandb = _start_wandb(r, dataset)
                    r.started = time.perf_counter()  # time/wall_s: training, not W&B's start.
        except BaseException as e:
            for r in runs:
                if r.wandb is not None:  # Started before another run's start failed.
                    r.wandb.summary({"failure": f"{type(e).__name__}: {e}"})
                    r.wandb.finish(exit_code=1)
                r.checkpoints.close()
            raise
        try:
            yield runs
        except Interrupted as e:
            for r in runs:
                if r.training:
                    r.wandb.mark_preempting()
                    r.wandb.finish(exit_code=e.exit_code)
            raise
        except BaseException as e:
            error = e
            if isinstance(e, NonFiniteError):  # A lone run's (vectorized trials fail alone).
                error = NonFiniteError(f"{e}; {_kept(runs[0].checkpoints)}")
            for r in runs:
                if r.training:
                    r.wandb.summary({"failure": f"{type(error).__name__}: {error}"})
                    r.wandb.finish(exit_code=1)
            if error is e:
                raise
            raise error from e
        finally:
            for r in runs:
                r.checkpoints.close()
        for r in runs:
            if r.wandb is not None and not r.failure:
                r.wandb.finish()
                if r.summary is not None:
                    print(final_table(r.name, r.summary, r.workdir))


def _restore(name, config, state, identity, stop, stack) -> Run:
    """Takes the workdir, refuses a checkpoint of another run, restores the latest intact
    checkpoint into `state` (replicated first: orbax then restores straight into that layout,
    where moving restored arrays onto other hosts' devices afterwards is refused)."""
    workdir = workdirs.workdir_for(config, name)
    workdirs.check_workdir(workdir, config.min_free_disk_mb)
    # The processes of one run share its workdir: the first owns it, the others learn
    # whether it could, so that a refused run ends on every host.
    refused, busy = "", False
    if sharding.is_main_process():
        try:
            stack.enter_context(workdirs.owned(workdir))
        except ConfigError as e:
            refused, busy = str(e), isinstance(e, workdirs.WorkdirBusy)
    refused, busy = sharding.from_first_process([refused, busy])
    if refused:
        raise (workdirs.WorkdirBusy if busy else ConfigError)(refused)
    checkpoints = Checkpoints(workdir, config.max_to_keep)
    try:
        state = sharding.replicate(state)

        def check(record):
            fields = (*BASE_IDENTITY, *identity)
            check_compatible(record, name, config.to_dict(), fields, workdir)

        restored = checkpoints.restore_latest(state, check)
        record = {}
        if restored is not None:
            state, record = restored
            print(f"resuming {workdir} from step {int(state.step)}", file=sys.stderr)
        elif (workdir / "summary.json").exists():
            raise ConfigError(
                f"{workdir} holds a finished run's summary.json but no checkpoint (its "
                "checkpoints/ folder is missing or empty), so it can neither resume nor start "
                f"afresh there; delete {workdir} to start afresh, or choose another --workdir"
            )
        run_file = workdirs.read_run_file(workdir)
        if run_file.get("experiment", name) != name:
            raise ConfigError(
                f"{workdir} holds a {run_file['experiment']!r} run, not {name!r}; "
                "use another --workdir"
            )
    except BaseException:
        checkpoints.close()
        raise
    wandb_id = run_file.get("wandb_run_id") or record.get("wandb_run_id", "")
    run = Run(name, config, workdir, keys(config.seed), checkpoints, state, record, None, stop)
    run.logged_step = record.get("logged_step", 0)
    run.record["wandb_run_id"] = wandb_id
    return run


def _start_wandb(r: Run, dataset: data.Dataset) -> wandb_logging.Session:
    """The run's W&B run: the one its earlier processes logged to, holding once each step
    they logged up to its checkpoint."""
    config = r.config
    main = sharding.is_main_process()
    wandb_id = r.record.get("wandb_run_id", "")
    if main and not wandb_id:
        # Recorded before W&B starts: a process killed while it starts continues this run.
        wandb_id = r.record["wandb_run_id"] = wandb_logging.new_run_id()
        workdirs.write_run_file(r.workdir, experiment=r.name, wandb_run_id=wandb_id)
    session = wandb_logging.Session(
        directory=r.workdir,
        config={**config.to_dict(), "experiment": r.name, "data_source": dataset.source},
        # Several hosts: one W&B run, from the first (the others' metrics are the same
        # global numbers).
        mode=config.wandb_mode if main else "disabled",
        project=config.wandb_project,
        entity=config.wandb_entity,
        name=config.wandb_name,
        group=config.wandb_group,
        job_type=r.name,
        init_timeout=config.wandb_init_timeout,
        run_id=wandb_id,
        journal=r.workdir / JOURNAL,
    )
    if main:
        if session.id != wandb_id:  # An online start failed and left W&B its id.
            r.record["wandb_run_id"] = session.id
            workdirs.write_run_file(r.workdir, experiment=r.name, wandb_run_id=session.id)
        again = session.restore_history(r.logged_step)
        if again:
            print(
                f"W&B had lost {again} logged row(s) of {r.workdir}: logged again", file=sys.stderr
            )
    r.image_dir.mkdir(parents=True, exist_ok=True)
    return session


def _already_complete(r: Run, dataset: data.Dataset) -> None:
    """Reads back a finished run's summary; finishes its W&B run too where a kill had left it
    open or short of rows."""
    summary_path = r.workdir / "summary.json"
    print(f"{r.workdir} is already complete at step {int(r.state.step)}: {summary_path}")
    r.summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if "wandb_run" in r.summary:
        print(final_table(r.name, r.summary, r.workdir))
    if _wandb_unfinished(r):
        session = _start_wandb(r, dataset)
        session.summary({k: v for k, v in r.summary.items() if k not in SUMMARY_PLACES})
        session.finish()
        print(
            f"finished its W&B run {session.id}, which the last process had left open",
            file=sys.stderr,
        )


def _wandb_unfinished(r: Run) -> bool:
    """Whether the run's W&B files lack its final exit or a journaled row."""
    wandb_id = r.record.get("wandb_run_id", "")
    if r.config.wandb_mode == "disabled" or not wandb_id or not sharding.is_main_process():
        return False  # Never logged to W&B, or another host's process.
    if not (r.workdir / JOURNAL).exists():
        return False
    runs = [wandb_logging.read_history(d) for d in wandb_logging.find_run_dirs(r.workdir, wandb_id)]
    if not runs or runs[-1]["exit_code"] != 0:
        return True
    held = set().union(*(h["steps"] for h in runs))
    journal = wandb_logging.read_journal(r.workdir / JOURNAL)
    return any(row["step"] not in held for row in journal if row["step"] <= r.logged_step)


def _align_steps(runs: list[Run]) -> None:
    """Vectorized trials resume from one step: the earliest that all of them saved.

    Trials checkpoint one after another, so a kill between two saves leaves them one
    checkpoint apart; the trials ahead go back to the common step (kept: max_to_keep >= 2).
    """
    if len(runs) < 2:
        return
    step = min(int(r.state.step) for r in runs)
    for r in runs:
        if int(r.state.step) == step:
            continue
        if step not in r.checkpoints.all_steps():
            raise CheckpointError(
                f"{r.workdir} has no checkpoint of step {step}, where the other vectorized "
                "trials resume; run the trials without --vectorize to finish them"
            )
        wandb_id = r.record["wandb_run_id"]
        r.state, r.record = r.checkpoints.restore(r.state, step)
        r.record["wandb_run_id"] = wandb_id
        r.logged_step = r.record.get("logged_step", 0)


def stop_if_signalled(runs: Sequence[Run], step: int) -> None:
    """After the runs' checkpoints of `step`: a pending SIGTERM/SIGINT ends them here."""
    signum = runs[0].stop.signum
    if signum is not None:
        raise Interrupted(
            f"{signal.Signals(signum).name} received: stopped at step {step} with a "
            f"checkpoint in {runs[0].checkpoints.directory}; run the same command again to "
            "resume",
            signum,
        )


def _kept(checkpoints: Checkpoints) -> str:
    """What a run that stopped on a NaN leaves behind (nothing after it is saved)."""
    step = checkpoints.latest_step()
    if step is None:
        return "no checkpoint was written yet, so the same command starts afresh"
    return f"its last good checkpoint, step {step}, is kept"


def final_table(name: str, summary: Mapping[str, Any], workdir: Path) -> str:
    """A run's ending for a person: its final figures and where everything is."""
    figures = {k: v for k, v in summary.items() if "/" in k and not k.startswith("time/")}
    wall = summary.get("time/wall_s", 0.0)
    lines = [f"{name} done in {wall / 60:.1f} min:"]
    width = max(map(len, figures), default=0)
    for key, value in figures.items():
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        lines.append(f"  {key.ljust(width)}  {shown}")
    wb = summary["wandb_run"]
    if wb["mode"] == "disabled":
        lines.append("W&B run       disabled")
    else:
        lines.append(f"W&B run       {wb.get('url') or wb['dir']} ({wb['mode']})")
        if "sync_command" in wb:
            lines.append(f"  upload:     {wb['sync_command']}")
    lines.append(f"images        {summary['images']}")
    lines.append(f"checkpoints   {summary['checkpoints']}")
    lines.append(f"summary.json  {workdir / 'summary.json'}")
    return "\n".join(lines)


def read_finished(workdir: str | Path, known: Mapping[str, type]) -> tuple[str, Any, dict]:
    """(experiment, config, record) of a run folder's newest checkpoint, without training.

    known: config class by experiment name. Safe beside a live trainer: read-only.
    """
    workdir = Path(workdir)
    if not (workdir / "checkpoints").is_dir():
        raise ConfigError(f"--workdir={workdir} holds no checkpoints/: not a genjax run folder")
    checkpoints = Checkpoints(workdir, read_only=True)
    try:
        record = checkpoints.newest_record()
    finally:
        checkpoints.close()
    if record is None:
        raise ConfigError(f"--workdir={workdir} holds no complete checkpoint yet")
    name = record.get("experiment")
    if name not in known:
        raise ConfigError(
            f"--workdir={workdir} holds a {name!r} run, not one of {', '.join(sorted(known))}"
        )
    fields = {f.name for f in dataclasses.fields(known[name])}
    config = known[name](**{k: v for k, v in record["config"].items() if k in fields})
    return name, config, record


def restore_finished(workdir: str | Path, state: Any) -> Any:
    """The newest intact checkpoint's state of a run folder, into `state`'s structure
    (replicated, as for a resume: every host of several then holds it)."""
    checkpoints = Checkpoints(workdir, read_only=True)
    try:
        restored = checkpoints.restore_latest(sharding.replicate(state))
    finally:
        checkpoints.close()
    if restored is None:
        raise CheckpointError(f"no checkpoint in {workdir} reads back intact")
    return restored[0]
