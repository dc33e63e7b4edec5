"""What every experiment's host loop shares: the workdir and its owner, restore or init, W&B,
signals, checkpoints, the NaN guard and summary.json. The loops themselves (epochs for the
autoencoders, iterations with image points for the GAN) are in genjax/trainers.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np

from genjax import data, sharding
from genjax import workdir as workdirs
from genjax.checkpoint import CheckpointError, Checkpoints, check_compatible, tree_digest
from genjax.config import BaseConfig, ConfigError
from genjax.steps import state as state_lib
from genjax.wandb_logging import Run, find_run_dirs, read_history, read_journal

JOURNAL = "wandb_rows.jsonl"  # Every W&B row this workdir's run logged (Run's journal).

# Pictures at a log point: (state, step, outputs) -> {"images": {key: array, (array,
# caption) or images.Deferred}, "scatters": {key: images.Scatter}}. outputs: the validation
# pass's per-example outputs (the family's eval_outputs) of the test split's first
# Trial.media_examples examples, host arrays; empty where the trainer has none (the GAN).
MediaFn = Callable[[Any, int, Mapping[str, np.ndarray]], Mapping[str, Mapping[str, Any]]]
# Costly figures (likelihood bounds, FID) at evaluation points: state -> {W&B key: float}.
EvaluateFn = Callable[[Any], Mapping[str, float]]


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


# Config fields that define any run: a checkpoint made under other values is refused, since
# resuming it would not continue the same run (data order, step grid, optimizer).
BASE_IDENTITY_FIELDS = (
    "dataset",
    "batch_size",
    "seed",
    "steps_per_epoch",
    "steps_per_dispatch",
    "learning_rate",
)


@dataclasses.dataclass(frozen=True)
class Family:
    """What a model family plugs into the loop (all static: hashable jitted functions)."""

    name: str
    train_step: Callable
    eval_step: Callable
    pixel_range: tuple[float, float]
    # Config fields that define the run (the base ones and the model's shape).
    identity_fields: tuple[str, ...] = BASE_IDENTITY_FIELDS
    # Fields held in the state as arrays (learning rate, KL weight) or that only choose random
    # keys (seed): trials that differ in nothing else train together under vmap.
    vector_fields: tuple[str, ...] = ()
    # Per-example outputs of eval_step ([B, ...], e.g. latent codes) that its media plots:
    # kept from the validation pass instead of computed again (fused.evaluate's outputs).
    eval_outputs: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class RunKeys:
    """Named random streams, each a pure function of the run seed."""

    init: jax.Array
    step: jax.Array  # Folded with state.step inside every train step.
    data: jax.Array  # Folded with the epoch number for the shuffle.
    eval: jax.Array  # Fixed, so validation numbers are comparable across epochs.
    sample: jax.Array  # For pictures (generation), fixed across epochs.
    evaluation: jax.Array  # For end-of-run figures (likelihood bounds, FID samples).


def run_keys(seed: int) -> RunKeys:
    root = jax.random.key(seed)
    names = [f.name for f in dataclasses.fields(RunKeys)]
    return RunKeys(*(jax.random.fold_in(root, i) for i in range(len(names))))


def steps_per_epoch(config, num_train: int) -> int:
    """Full batches per pass over the training split (the remainder is dropped: static shapes)."""
    if config.batch_size > num_train:
        raise ConfigError(
            f"--batch_size={config.batch_size} is larger than the training split "
            f"({num_train} examples); use a smaller batch"
        )
    sharding.check_batch(config.batch_size)
    full = num_train // config.batch_size
    cap = getattr(config, "steps_per_epoch", 0)  # Only epoch-trained experiments cap it.
    return min(full, cap) if cap else full


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


def check_finite(metrics: Mapping[str, np.ndarray], prefix: str, first_step: int) -> None:
    for name, values in metrics.items():
        values = np.atleast_1d(values)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            step = first_step + int(bad[0])
            raise NonFiniteError(
                f"{prefix}{name} is {values[bad[0]]} at step {step}; training stopped "
                "(lower --learning_rate, or check the data)"
            )


def checkpoint_note(checkpoints: Checkpoints) -> str:
    """What a run that stopped on a NaN leaves behind (nothing after it is saved)."""
    step = checkpoints.latest_step()
    if step is None:
        return "no checkpoint was written yet, so the same command starts afresh"
    return f"its last good checkpoint, step {step}, is kept"


class Trainer(Protocol):
    """A host loop: how many steps make the run, and how to run them from a restored state.

    `ctxs` holds one RunContext per trial; with `vectorized`, `state` is the trials' states
    stacked on a leading axis and trained together under vmap. A trainer returns each
    trial's summary ({"failure": ...} for a trial that stopped on a NaN).
    """

    total_steps: int

    def __call__(
        self, ctxs: list[RunContext], state: Any, vectorized: bool
    ) -> list[dict[str, Any]]: ...


# Called with every logged row of scalars: (step, metrics) -> True to end the run early
# (a sweep's early termination). The run then ends at its next checkpoint point.
EarlyStopFn = Callable[[int, Mapping[str, float]], bool]


@dataclasses.dataclass(frozen=True)
class Trial:
    """One run's own parts: its config, how to build its initial state, and its pictures.

    evaluate: figures at evaluation points (the end of an epoch-trained run; every
    eval_interval iterations and the end of the GAN), logged with that point's row.
    prepare: what evaluate needs and may take long to make (the FID feature network, trained
    once if missing): called after the workdir and checkpoint checks, before W&B starts.
    plots: see the field.
    """

    config: BaseConfig
    init_state: Callable[[jax.Array], Any]
    media: MediaFn
    evaluate: EvaluateFn | None = None
    early_stop: EarlyStopFn | None = None
    prepare: Callable[[], None] | None = None
    # Its media include matplotlib plots (the latent scatters): the W&B thread then loads
    # matplotlib while the first dispatch compiles (Run's warm_up).
    plots: bool = False
    # How many of the test split's first examples' eval_outputs its media takes (0: its
    # media gets none, an empty mapping, and must not look for them).
    media_examples: int = 0


@dataclasses.dataclass
class DispatchClock:
    """Each training dispatch's wall time, marked by whether W&B's worker thread was logging
    beside it. Where training fills every core (this 2-core CPU) the worker slows the
    dispatches it overlaps; their time beyond the median of the dispatches run alone is
    what logging costs training besides the loop's own logging seconds. Measured within
    one run, dispatch after dispatch, so the machine's drift from minute to minute (+-20%
    here) mostly cancels, where runs timed with and without W&B could not tell a 5% cost
    from noise. Only dispatches of the usual length count, and not a process's first
    (it compiles)."""

    alone: list[float] = dataclasses.field(default_factory=list)
    beside: list[float] = dataclasses.field(default_factory=list)
    compiled: bool = False

    def start(self, runs: Sequence[Run], ready: Any = None) -> tuple[float, bool]:
        """Starts timing a dispatch once `ready` is computed: arrays the dispatch takes that
        earlier dispatches are still computing (the epoch's shuffle) are not logging's cost."""
        jax.block_until_ready(ready)
        return time.perf_counter(), any(r.busy() for r in runs)

    def stop(self, mark: tuple[float, bool], runs: Sequence[Run], usual: bool) -> None:
        """After the dispatch's results are on the host; usual: of the usual length."""
        started, busy = mark
        seconds = time.perf_counter() - started
        if not usual:
            return
        if not self.compiled:
            self.compiled = True
            return
        beside = busy or any(r.busy() or r.idle_since > started for r in runs)
        (self.beside if beside else self.alone).append(seconds)

    def timings(self) -> dict[str, float]:
        """The counts (none where the trainer times no dispatches: the GAN's segments, each
        followed by its iterations' rows, are all beside logging); the estimate where there
        are dispatches of both kinds to compare."""
        if not self.alone and not self.beside:
            return {}
        counts = {
            "time/dispatches_alone": len(self.alone),
            "time/dispatches_beside_logging": len(self.beside),
        }
        if len(self.alone) < 2 or not self.beside:
            return counts
        alone = statistics.median(self.alone)
        return counts | {
            "time/dispatch_alone_s": alone,
            # Signed: a negative estimate is the noise of the measurement showing.
            "time/logging_beside_s": sum(self.beside) - alone * len(self.beside),
        }


@dataclasses.dataclass
class RunContext:
    """Everything a trainer needs about one run besides the state; its helpers keep the
    rules in one place."""

    trial: Trial
    family: Family
    dataset: data.Dataset
    keys: RunKeys
    wandb_run: Run
    workdir: Path
    checkpoints: Checkpoints
    record: dict[str, Any]  # The restored checkpoint's record ({} for a new run).
    stop: _SignalFlag
    failure: str = ""  # Set when this trial stopped on its own (a NaN) while others go on.
    stopped_early: bool = False  # Set when early_stop asked this run to end.
    # What logging costs this process: seconds making pictures and logging rows (media,
    # log), against the wall time since the trainer started; both go into summary.json.
    logging_s: float = 0.0
    # Logging seconds up to and including the first point with pictures, whose media call
    # compiles the pictures' jitted functions (once per process).
    logging_first_s: float | None = None
    # The last W&B step logged: a checkpoint records it, and a resume makes W&B hold every
    # step up to it (Run.restore_history).
    logged_step: int = 0
    started: float = dataclasses.field(default_factory=time.perf_counter)
    clock: DispatchClock = dataclasses.field(default_factory=DispatchClock)

    @property
    def config(self) -> BaseConfig:
        return self.trial.config

    @property
    def image_dir(self) -> Path:
        return self.workdir / "images"

    def save(self, step: int, state: Any, **extra: Any) -> None:
        """Checkpoints a state that passed the NaN guard, with what a resume needs."""
        self.checkpoints.save(
            step,
            state,
            {
                "step": step,
                "wandb_run_id": self.wandb_run.id,
                "logged_step": self.logged_step,
                "experiment": self.family.name,
                "config": self.config.to_dict(),
                **extra,
            },
        )

    def stop_if_signalled(self, step: int) -> None:
        """After a checkpoint: a pending SIGTERM/SIGINT ends the run here."""
        if self.stop.signum is not None:
            raise _interrupted(self.stop.signum, step, self.checkpoints)

    def media(
        self, state: Any, step: int, outputs: Mapping[str, np.ndarray] | None = None
    ) -> Mapping[str, Mapping[str, Any]]:
        """The trial's pictures of this state (timed as logging)."""
        start = time.perf_counter()
        try:
            return self.trial.media(state, step, outputs or {})
        finally:
            self.logging_s += time.perf_counter() - start

    def log(
        self,
        step: int,
        metrics: Mapping[str, Any],
        pictures: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """One W&B step; pictures also go to WORKDIR/images/KEY.png (the latest of each),
        written by W&B's worker thread with the step."""
        start = time.perf_counter()
        pictures = pictures or {}
        self.wandb_run.log(
            step,
            metrics,
            images=pictures.get("images"),
            scatters=pictures.get("scatters"),
            # Several hosts: the first writes the files (the workdir may be shared).
            save_dir=self.image_dir if sharding.is_main_process() else None,
        )
        self.logging_s += time.perf_counter() - start
        self.logged_step = step
        if self.logging_first_s is None and pictures:
            self.logging_first_s = self.logging_s

    def timings(self) -> dict[str, float]:
        """This process's training wall time; the share of it the training loop spent making
        pictures and handing rows to W&B (logging_s); the seconds W&B's worker thread spent
        beside it (logging_worker_s: on 2 cores it competes with training for them); and,
        where the clock could compare dispatches, what that competition cost training
        (logging_beside_s) and the whole share (logging_cost_share, and per epoch after the
        first picture point: logging_cost_share_after_first)."""
        self.wandb_run.flush()
        wall = time.perf_counter() - self.started
        first = self.logging_first_s or 0.0
        timings = {
            "time/wall_s": wall,
            "time/logging_s": self.logging_s,
            "time/logging_first_point_s": first,  # Of logging_s: up to the first pictures.
            "time/logging_share": self.logging_s / wall if wall > 0 else 0.0,
            # Without the logging up to the first picture point (see logging_first_s).
            "time/logging_share_after_first": (
                (self.logging_s - first) / (wall - first) if wall > first else 0.0
            ),
            "time/logging_worker_s": self.wandb_run.worker_s,
        }
        beside = self.clock.timings()
        if "time/logging_beside_s" in beside:
            # The loop's own logging seconds and what the worker cost the dispatches it
            # overlapped: the share of the run logging took from training, on this machine.
            spent = self.logging_s + beside["time/logging_beside_s"]
            beside["time/logging_cost_share"] = spent / wall if wall > 0 else 0.0
            # The same without the first picture point, whose media compiles the pictures'
            # programs once per process (~1 s for the VAE): what logging costs each epoch.
            # (Compiling them on a thread beside the first dispatch's compilation was timed
            # and saved nothing: XLA:CPU's compiler already keeps both cores busy.)
            beside["time/logging_cost_share_after_first"] = (
                (spent - first) / (wall - first) if wall > first else 0.0
            )
        return timings | beside

    def ask_early_stop(self, step: int, metrics: Mapping[str, Any]) -> bool:
        """Shows a logged row to the trial's early_stop; remembers a request to stop."""
        if self.trial.early_stop is not None and not self.stopped_early:
            scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
            self.stopped_early = bool(self.trial.early_stop(step, scalars))
        return self.stopped_early

    def write_summary(self, metrics: Mapping[str, Any], state: Any) -> dict[str, Any]:
        """summary.json: final metrics under their W&B names, config, where the run is."""
        if self.stopped_early:
            metrics = {**metrics, "early_terminated": True}
        metrics = {**metrics, **self.timings()}
        summary = {
            **metrics,
            "state_sha256": tree_digest(state),
            "config": self.config.to_dict(),
            "wandb_run": self.wandb_run.describe(),
            "data_source": self.dataset.source,
            "images": str(self.image_dir),
            "checkpoints": str(self.checkpoints.directory),
        }
        self.wandb_run.summary(dict(metrics) | {"state_sha256": summary["state_sha256"]})
        if sharding.is_main_process():
            (self.workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def fail(self, error: BaseException) -> None:
        """Ends this trial alone (vectorized trials: the others go on); its W&B run fails."""
        self.failure = f"{type(error).__name__}: {error}; {checkpoint_note(self.checkpoints)}"
        print(f"{self.workdir}: {self.failure}", file=sys.stderr)
        self.wandb_run.summary({"failure": self.failure})
        self.wandb_run.finish(exit_code=1)


@dataclasses.dataclass
class _Opened:
    """A trial's workdir, checkpoints and restored (or fresh) state, before W&B starts."""

    trial: Trial
    workdir: Path
    checkpoints: Checkpoints
    record: dict[str, Any]
    keys: RunKeys
    state: Any
    template: Any  # A fresh state: the structure a restore reads into.
    wandb_run_id: str  # "" before the run's first start.


def _open(trial: Trial, family: Family, owners: contextlib.ExitStack) -> _Opened:
    """Takes the workdir (refused while another process has it), refuses a checkpoint of
    another run, restores the latest intact checkpoint."""
    config = trial.config
    workdir = workdirs.workdir_for(config, family.name)
    workdirs.check_workdir(workdir, config.min_free_disk_mb)
    if sharding.is_main_process():  # The processes of one run share its workdir.
        owners.enter_context(workdirs.owned(workdir))
    checkpoints = Checkpoints(workdir, config.max_to_keep)
    try:
        keys = run_keys(config.seed)
        # Replicated before a restore reads into it: orbax then restores every array in that
        # layout, where moving restored single-device arrays onto the other hosts' devices
        # afterwards is refused by jax (no cross-host transfers between CPU/GPU processes).
        template = state = sharding.replicate(trial.init_state(keys.init))

        def check(record):
            check_compatible(record, family.name, config.to_dict(), family.identity_fields, workdir)

        restored = checkpoints.restore_latest(template, check)
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
        if run_file.get("experiment", family.name) != family.name:
            raise ConfigError(
                f"{workdir} holds a {run_file['experiment']!r} run, not {family.name!r}; "
                "use another --workdir"
            )
        run_id = run_file.get("wandb_run_id") or record.get("wandb_run_id", "")
    except BaseException:
        checkpoints.close()
        raise
    return _Opened(trial, workdir, checkpoints, record, keys, state, template, run_id)


def _wandb_run(o: _Opened, family: Family, dataset: data.Dataset) -> Run:
    """The trial's W&B run: the one its earlier processes logged to, holding once each step
    they logged up to its checkpoint (Run.restore_history)."""
    config = o.trial.config
    main = sharding.is_main_process()
    run = Run(
        directory=o.workdir,
        config={**config.to_dict(), "experiment": family.name, "data_source": dataset.source},
        # Several hosts: one W&B run, from the first (the others' metrics are the same
        # global numbers).
        mode=config.wandb_mode if main else "disabled",
        project=config.wandb_project,
        entity=config.wandb_entity,
        name=config.wandb_name,
        group=config.wandb_group,
        job_type=family.name,
        init_timeout=config.wandb_init_timeout,
        run_id=o.wandb_run_id,
        warm_up=o.trial.plots,
        journal=o.workdir / JOURNAL,
    )
    if main:
        if run.id != o.wandb_run_id:
            workdirs.write_run_file(o.workdir, experiment=family.name, wandb_run_id=run.id)
        again = run.restore_history(o.record.get("logged_step", 0))
        if again:
            print(
                f"W&B had lost {again} logged row(s) of {o.workdir}: logged again", file=sys.stderr
            )
    return run


def _already_complete(o: _Opened, family: Family, dataset: data.Dataset) -> dict[str, Any]:
    """A finished run's summary; its W&B run finished too, when a kill had left it open or
    short of rows."""
    summary_path = o.workdir / "summary.json"
    print(f"{o.workdir} is already complete at step {int(o.state.step)}: {summary_path}")
    o.checkpoints.close()
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if _wandb_unfinished(o):
        run = _wandb_run(o, family, dataset)
        metrics = {k: v for k, v in summary.items() if k not in SUMMARY_PLACES}
        run.summary(metrics)
        run.finish()
        print(
            f"finished its W&B run {run.id}, which the last process had left open", file=sys.stderr
        )
    return summary


def _wandb_unfinished(o: _Opened) -> bool:
    """Whether the run's W&B files lack its final exit or a journaled row."""
    if not (o.workdir / JOURNAL).exists() or not sharding.is_main_process():
        return False  # Never logged to W&B (disabled), or another host's process.
    if o.trial.config.wandb_mode == "disabled" or not o.wandb_run_id:
        return False
    runs = [read_history(d) for d in find_run_dirs(o.workdir, o.wandb_run_id)]
    if not runs or runs[-1]["exit_code"] != 0:
        return True
    held = set().union(*(h["steps"] for h in runs))
    logged = o.record.get("logged_step", 0)
    return any(
        r["step"] not in held for r in read_journal(o.workdir / JOURNAL) if r["step"] <= logged
    )


# summary.json's entries that say where things are, not what the run measured.
SUMMARY_PLACES = ("config", "wandb_run", "data_source", "images", "checkpoints")


def run(trial: Trial, family: Family, dataset: data.Dataset, trainer: Trainer) -> dict[str, Any]:
    """Trains (or resumes) a run in its workdir; returns the summary written to summary.json."""
    summary = run_vectorized([trial], family, dataset, trainer, vectorized=False)[0]
    if "failure" in summary:  # Only vectorized trials fail alone; one run raises instead.
        raise TrainingStopped(summary["failure"])
    return summary


def run_vectorized(
    trials: list[Trial],
    family: Family,
    dataset: data.Dataset,
    trainer: Trainer,
    vectorized: bool = True,
) -> list[dict[str, Any]]:
    """Trains trials that differ only in family.vector_fields as one vmapped program.

    Each trial keeps its own workdir, checkpoints, W&B run and summary.json, exactly as if it
    had run alone; trials already complete are skipped. Returns the summaries in order.
    """
    if not vectorized and len(trials) != 1:
        raise ValueError("only vectorized runs hold more than one trial")
    with contextlib.ExitStack() as owners:  # Each workdir is this process's until the end.
        return _run_owned(trials, family, dataset, trainer, vectorized, owners)


def _run_owned(trials, family, dataset, trainer, vectorized, owners) -> list[dict[str, Any]]:
    summaries: list[dict[str, Any] | None] = [None] * len(trials)
    opened: list[_Opened] = []
    try:
        for i, trial in enumerate(trials):
            o = _open(trial, family, owners)
            if int(o.state.step) >= trainer.total_steps:
                summaries[i] = _already_complete(o, family, dataset)
            else:
                opened.append(o)
        if not opened:
            return summaries
        _align_steps(opened)
        for o in opened:
            if o.trial.prepare is not None:
                o.trial.prepare()
    except BaseException:
        for o in opened:
            o.checkpoints.close()
        raise

    wandb_runs: list[Run] = []
    try:
        for o in opened:
            wandb_runs.append(_wandb_run(o, family, dataset))
        with _SignalFlag() as stop:
            clock = DispatchClock()  # Vectorized trials share their dispatches.
            ctxs = [
                RunContext(
                    o.trial,
                    family,
                    dataset,
                    o.keys,
                    w,
                    o.workdir,
                    o.checkpoints,
                    o.record,
                    stop,
                    clock=clock,
                    logged_step=o.record.get("logged_step", 0),
                )
                for o, w in zip(opened, wandb_runs, strict=True)
            ]
            for ctx in ctxs:
                ctx.image_dir.mkdir(parents=True, exist_ok=True)
            if vectorized:
                state = state_lib.stack([o.state for o in opened])
            else:
                state = opened[0].state
            state = sharding.replicate(state)  # Parameters and optimizer on every device.
            print(f"{family.name}: training on {sharding.describe()}", file=sys.stderr)
            results = trainer(ctxs, state, vectorized)
    except Interrupted as e:
        for w in wandb_runs:
            w.mark_preempting()
            w.finish(exit_code=e.exit_code)
        raise
    except BaseException as e:
        if isinstance(e, NonFiniteError):  # A lone run (vectorized trials fail alone).
            e.args = (f"{e}; {checkpoint_note(opened[0].checkpoints)}",)
        for w in wandb_runs:
            w.summary({"failure": f"{type(e).__name__}: {e}"})
            w.finish(exit_code=1)
        raise
    finally:
        for o in opened:
            o.checkpoints.close()
    for ctx, result in zip(ctxs, results, strict=True):
        if not ctx.failure:  # A failed trial's run was finished when it failed.
            ctx.wandb_run.finish()
            print(final_message(result, ctx.workdir))
    it = iter(results)
    return [s if s is not None else next(it) for s in summaries]


@dataclasses.dataclass(frozen=True)
class Experiment:
    """An experiment as the runners (its command line, a sweep, an evaluation) see it."""

    name: str
    config_cls: type
    load_data: Callable[[Any], data.Dataset]
    family: Callable[[Any], Family]
    trial: Callable[[Any, data.Dataset, EarlyStopFn | None], Trial]
    trainer: Callable[[Any, data.Dataset], Trainer]
    # For a sweep's side-by-side picture: (config, state, dataset) -> uint8 [K, H, W, C]
    # outputs, each under the K originals it shows (None: no originals, e.g. generated).
    # None: the experiment is not swept.
    comparison: Callable[[Any, Any, data.Dataset], tuple[np.ndarray | None, np.ndarray]] | None = (
        None
    )

    def run(self, config, early_stop: EarlyStopFn | None = None) -> dict[str, Any]:
        dataset = self.load_data(config)
        trial = self.trial(config, dataset, early_stop)
        return run(trial, self.family(config), dataset, self.trainer(config, dataset))

    def run_vectorized(
        self, configs: list[Any], early_stops: list[EarlyStopFn | None] | None = None
    ) -> list[dict[str, Any]]:
        """Trials that differ only in their family's vector_fields (checked: ConfigError)."""
        check_vectorizable(configs, self.family(configs[0]))
        dataset = self.load_data(configs[0])
        early_stops = early_stops or [None] * len(configs)
        trials = [self.trial(c, dataset, e) for c, e in zip(configs, early_stops, strict=True)]
        family, trainer = self.family(configs[0]), self.trainer(configs[0], dataset)
        return run_vectorized(trials, family, dataset, trainer)

    def restore(
        self, workdir: str | os.PathLike, dataset: data.Dataset | None = None
    ) -> tuple[Any, Any, data.Dataset]:
        """(config, state, dataset) of a run's latest checkpoint, without training.

        dataset: the run's data when the caller has it loaded already (else loaded here).
        Safe beside a live trainer: the checkpoints are opened read-only.
        """
        workdir = Path(workdir)
        checkpoints = Checkpoints(workdir, read_only=True)
        try:
            record = checkpoints.newest_record()
            if record is None:
                raise ConfigError(f"{workdir} holds no complete checkpoint; train it first")
            if record.get("experiment") != self.name:
                raise ConfigError(
                    f"{workdir} holds a {record.get('experiment')!r} run, not {self.name!r}"
                )
            known = {f.name for f in dataclasses.fields(self.config_cls)}
            config = self.config_cls(**{k: v for k, v in record["config"].items() if k in known})
            if dataset is None:
                dataset = self.load_data(config)
            template = self.trial(config, dataset, None).init_state(run_keys(config.seed).init)
            # Replicated, as for a resume (_open): every host of several then holds it.
            restored = checkpoints.restore_latest(sharding.replicate(template))
            if restored is None:
                raise CheckpointError(f"no checkpoint in {workdir} reads back intact")
            state = restored[0]
        finally:
            checkpoints.close()
        return config, state, dataset


# Fields that never change what is computed: where results go, how W&B names them.
PER_TRIAL_FIELDS = ("workdir", "wandb_name", "wandb_group", "progress")


def check_vectorizable(configs: list[BaseConfig], family: Family) -> None:
    """Refuses trials that differ in a field that changes the compiled program or the loop."""
    allowed = set(family.vector_fields) | set(PER_TRIAL_FIELDS)
    first = configs[0].to_dict()
    differ = sorted(
        {k for c in configs[1:] for k, v in c.to_dict().items() if v != first[k]} - allowed
    )
    if differ:
        can = (
            f"can vectorize only over {', '.join(family.vector_fields)}"
            if family.vector_fields
            else "does not vectorize"
        )
        raise ConfigError(
            f"--vectorize: the trials differ in {', '.join(differ)}, which changes array "
            f"shapes or the training loop; a {family.name} run {can}. "
            "Run the sweep without --vectorize"
        )


def _align_steps(opened: list[_Opened]) -> None:
    """Vectorized trials resume from one step: the earliest that all of them saved.

    Trials checkpoint one after another, so a kill between two saves leaves them one
    checkpoint apart; the trials ahead go back to the common step (kept: max_to_keep >= 2).
    """
    step = min(int(o.state.step) for o in opened)
    for o in opened:
        if int(o.state.step) == step:
            continue
        if step not in o.checkpoints.all_steps():
            raise CheckpointError(
                f"{o.workdir} has no checkpoint of step {step}, where the other vectorized "
                "trials resume; run the trials without --vectorize to finish them"
            )
        o.state, o.record = o.checkpoints.restore(o.template, step)


def _interrupted(signum: int, step: int, checkpoints: Checkpoints) -> Interrupted:
    name = signal.Signals(signum).name
    return Interrupted(
        f"{name} received: stopped at step {step} with a checkpoint in "
        f"{checkpoints.directory}; run the same command again to resume",
        signum,
    )


def final_message(summary: Mapping[str, Any], workdir: Path) -> str:
    """Tells the user where everything is."""
    wb = summary["wandb_run"]
    lines = [f"done: {json.dumps({k: v for k, v in summary.items() if '/' in k})}"]
    if wb["mode"] == "disabled":
        lines.append("W&B run:      disabled")
    else:
        lines.append(f"W&B run:      {wb.get('url') or wb['dir']} ({wb['mode']})")
        if "sync_command" in wb:
            lines.append(f"  upload it:  {wb['sync_command']}")
        lines.append(f"  its media:  {Path(wb['dir']) / 'files' / 'media'}")
    lines.append(f"images:       {summary['images']}")
    lines.append(f"checkpoints:  {summary['checkpoints']}")
    lines.append(f"summary.json: {workdir / 'summary.json'}")
    return "\n".join(lines)
