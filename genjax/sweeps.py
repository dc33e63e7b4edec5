"""W&B sweep files, read and run without the W&B server.

A sweep file is W&B's own YAML (`wandb sweep FILE` accepts it unchanged). Here it is checked
against the experiment's config before anything trains, and its trials are suggested by
W&B's own engine, the `sweeps` package (the code W&B's server-side controller runs): grid,
random and bayes search, and hyperband early termination. Random draws and bayes proposals
are made reproducible by seeding the engine's random generators per trial.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import re
import typing
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml

with warnings.catch_warnings():
    # sweeps 0.2 declares pydantic-1 models; pydantic 2 warns about them on import.
    warnings.simplefilter("ignore")
    import sweeps
    from sweeps.config.schema import dereferenced_sweep_config_jsonschema

from genjax import cli
from genjax.config import ConfigError


class SweepError(ConfigError):
    """A sweep file that cannot run: names the file, the entry and the fix."""


# Set by the sweep runner for every trial; a sweep file may not set them.
RUNNER_FIELDS = ("workdir", "wandb_name", "wandb_group")
# Keys W&B's sweep schema knows, plus run_cap (the server's cap on the number of runs).
TOP_LEVEL_KEYS = (*dereferenced_sweep_config_jsonschema["properties"], "run_cap")
PARAMETER_KEYS = ("value", "values", "distribution", "min", "max", "mu", "sigma", "q")
PARAMETER_KEYS += ("probabilities", "a", "b")
# Distributions whose min and max are values a trial can get (not exponents, not moments).
VALUE_BOUNDED = ("uniform", "int_uniform", "q_uniform", "log_uniform_values")
VALUE_BOUNDED += ("q_log_uniform_values",)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A checked sweep file."""

    path: Path
    spec: dict[str, Any]  # The file's content, as W&B reads it.
    name: str
    experiment: str
    method: str
    parameters: dict[str, dict[str, Any]]
    metric: dict[str, str] | None  # {"name": ..., "goal": "minimize" | "maximize"}
    run_cap: int | None
    early_terminate: dict[str, Any] | None

    @property
    def engine_spec(self) -> dict[str, Any]:
        """The spec the `sweeps` engine takes (its schema does not know run_cap)."""
        return {k: v for k, v in self.spec.items() if k != "run_cap"}

    def grid_size(self) -> int | None:
        """Number of grid points (None unless method is grid)."""
        if self.method != "grid":
            return None
        sizes = []
        for p in self.parameters.values():
            if "values" in p:
                sizes.append(len(p["values"]))
            elif p.get("distribution") == "int_uniform":
                sizes.append(p["max"] - p["min"] + 1)
            elif p.get("distribution") == "q_uniform":
                sizes.append(len(np.arange(p["min"], p["max"], p["q"])))
            else:
                sizes.append(1)
        return math.prod(sizes)


def experiment_of(spec: Mapping[str, Any], where: str) -> str:
    """The experiment a sweep runs: `-m experiments.NAME` in command, or program's file."""
    command = spec.get("command") or []
    for flag, module in zip(command, command[1:], strict=False):
        if flag == "-m" and str(module).startswith("experiments."):
            return str(module).removeprefix("experiments.")
    program = str(spec.get("program", ""))
    match = re.fullmatch(r"(?:\./)?experiments/(\w+)\.py", program)
    if match:
        return match.group(1)
    raise SweepError(
        f"{where}: cannot tell which experiment it runs; set `program: experiments/NAME.py` "
        "and `command: [${env}, ${interpreter}, -m, experiments.NAME, ${args}]`"
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last,
    so one of two values set for a parameter would be silently lost)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load(path: str | Path, experiments: Mapping[str, type]) -> Sweep:
    """Reads and checks a sweep file; `experiments` maps names to their config classes."""
    path = Path(path)
    try:
        spec = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (safe)
    except OSError as e:
        raise SweepError(f"cannot read the sweep file {path}: {e.strerror or e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise SweepError(f"{where}: not valid YAML: {e.problem}") from None
    except yaml.YAMLError as e:
        raise SweepError(f"{path} is not valid YAML: {e}") from None
    where = str(path)
    if not isinstance(spec, dict):
        raise SweepError(f"{where}: a sweep file is a YAML mapping (method:, parameters:, ...)")
    unknown = sorted(set(spec) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise SweepError(
            f"{where}: unknown key(s) {', '.join(unknown)}; a W&B sweep file has "
            + ", ".join(TOP_LEVEL_KEYS)
        )
    method = spec.get("method")
    if method not in ("grid", "random", "bayes"):
        extra = " (custom needs W&B's server)" if method == "custom" else ""
        raise SweepError(f"{where}: method: {method!r}{extra}; use grid, random or bayes")
    experiment = experiment_of(spec, where)
    if experiment not in experiments:
        raise SweepError(
            f"{where}: runs experiments.{experiment}, which cannot be swept; "
            f"sweepable: {', '.join(sorted(experiments))}"
        )
    parameters = spec.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise SweepError(f"{where}: `parameters:` must map at least one config field to values")
    config_cls = experiments[experiment]
    hints = typing.get_type_hints(config_cls)
    types = {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}
    for name, p in parameters.items():
        _check_parameter(where, experiment, name, p, types, config_cls)
    metric = spec.get("metric")
    well_formed = isinstance(metric, dict) and isinstance(metric.get("name"), str)
    if metric is not None and not well_formed:
        raise SweepError(f"{where}: metric must be {{name: KEY, goal: minimize|maximize}}")
    needs_metric = method == "bayes" or "early_terminate" in spec
    if needs_metric and metric is None:
        raise SweepError(f"{where}: {method} search and early_terminate need a `metric:`")
    run_cap = spec.get("run_cap")
    if run_cap is not None and not (type(run_cap) is int and run_cap > 0):
        raise SweepError(f"{where}: run_cap: {run_cap!r}; must be a positive integer")
    engine_spec = {k: v for k, v in spec.items() if k != "run_cap"}
    try:
        filled = sweeps.SweepConfig(engine_spec)
    except (jsonschema.ValidationError, ValueError) as e:
        message = getattr(e, "message", None) or str(e)
        raise SweepError(f"{where}: {message.splitlines()[0]}") from None
    for name, p in filled["parameters"].items():
        _check_distribution(where, name, p, types[name])
    if method == "grid":
        # The engine refuses continuous distributions only when asked for a trial: ask now.
        try:
            with _seeded(0, 0):
                sweeps.next_run(engine_spec, [])
        except ValueError as e:
            raise SweepError(f"{where}: {e}") from None
    metric = dict(filled["metric"]) if "metric" in filled else None
    return Sweep(
        path=path,
        spec=spec,
        name=str(spec.get("name") or path.stem),
        experiment=experiment,
        method=method,
        parameters={k: dict(v) for k, v in filled["parameters"].items()},
        metric=metric,
        run_cap=run_cap,
        early_terminate=dict(filled["early_terminate"]) if "early_terminate" in filled else None,
    )


def _check_parameter(where, experiment, name, p, types, config_cls) -> None:
    if name not in types:
        raise SweepError(
            f"{where}: parameter {name!r} is not a setting of experiments.{experiment}; "
            f"its settings are: {', '.join(types)}"
        )
    if name in RUNNER_FIELDS:
        raise SweepError(f"{where}: parameter {name!r} is set by the sweep runner per trial")
    if not isinstance(p, dict):
        raise SweepError(f"{where}: parameter {name}: expected a mapping such as {{values: [..]}}")
    if "parameters" in p:
        raise SweepError(f"{where}: parameter {name}: nested parameters are not config fields")
    unknown = sorted(set(p) - set(PARAMETER_KEYS))
    if unknown:
        raise SweepError(
            f"{where}: parameter {name}: unknown key(s) {', '.join(unknown)}; "
            f"use {', '.join(PARAMETER_KEYS)}"
        )
    if "values" in p and (not isinstance(p["values"], list) or not p["values"]):
        raise SweepError(f"{where}: parameter {name}: values must be a non-empty list")
    for value in [p["value"]] if "value" in p else p.get("values", []):
        try:
            # The type only: a value may need another swept or fixed setting to be valid.
            cli.parse(config_cls, [f"--{name}={format_value(value)}"], validate=False)
        except ConfigError as e:
            raise SweepError(f"{where}: parameter {name}: {e}") from None
    for key in ("min", "max", "mu", "sigma", "q", "a", "b"):
        if key in p and not _is_number(p[key]):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(p[key], str) else ""
            raise SweepError(f"{where}: parameter {name}: {key}: {p[key]!r} is not a number{hint}")


def _check_distribution(where, name, p, annotation) -> None:
    """A drawn value must fit the field: integers for int fields, choices for the rest."""
    kind = p.get("distribution")
    if kind in ("constant", "categorical"):
        return
    if annotation is int and not (kind in ("int_uniform",) or kind.startswith("q_")):
        raise SweepError(
            f"{where}: parameter {name} is an integer setting but is drawn from {kind}; "
            "give integer min and max (int_uniform) or a list of values"
        )
    if annotation not in (int, float):
        raise SweepError(f"{where}: parameter {name} takes a choice; give it `values: [...]`")
    if kind.startswith("q_") and annotation is int and not isinstance(p.get("q", 1), int):
        raise SweepError(f"{where}: parameter {name} is an integer setting; q must be an integer")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def format_value(value: Any) -> str:
    """A value as `wandb agent` writes it into `--name=value` (Python's str)."""
    return str(_plain(value))


def _plain(value: Any) -> Any:
    """numpy scalars (what the engine draws) as Python numbers."""
    return value.item() if isinstance(value, np.generic) else value


def trial_flags(params: Mapping[str, Any]) -> list[str]:
    """The flags a trial's parameters become, exactly as W&B's agent builds its ${args}."""
    return [f"--{k}={format_value(v)}" for k, v in params.items()]


@dataclasses.dataclass
class TrialRecord:
    """What the runner keeps of a trial in sweep.json."""

    index: int
    params: dict[str, Any]
    state: str = "pending"  # pending, running, finished, stopped (early), failed
    metric: float | None = None
    history: dict[str, float] = dataclasses.field(default_factory=dict)  # step -> metric
    error: str = ""
    workdir: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ENGINE_STATE = {
    "pending": "pending",
    "running": "running",
    "finished": "finished",
    "stopped": "killed",  # W&B's agent kills an early-terminated run.
    "failed": "failed",
}


def _engine_run(sweep: Sweep, record: TrialRecord, state: str | None = None) -> sweeps.SweepRun:
    metric = sweep.metric["name"] if sweep.metric else None
    history = [{metric: v} for _, v in sorted(record.history.items(), key=lambda kv: int(kv[0]))]
    summary = {metric: record.metric} if metric and record.metric is not None else {}
    return sweeps.SweepRun(
        name=f"trial-{record.index}",
        state=state or ENGINE_STATE[record.state],
        config={k: {"value": v} for k, v in record.params.items()},
        summaryMetrics=summary,
        sampledHistory=history,
    )


@contextlib.contextmanager
def _seeded(seed: int, index: int) -> Iterator[None]:
    """The engine draws from Python's and numpy's global generators: seed them per trial,
    and leave them as they were."""
    saved = random.getstate(), np.random.get_state()
    random.seed(f"genjax-sweep-{seed}-{index}")
    np.random.seed([seed, index])
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


def suggest(sweep: Sweep, previous: Sequence[TrialRecord], seed: int) -> dict[str, Any] | None:
    """The next trial's parameters from W&B's engine, or None when a grid is exhausted.

    Grid: the next unseen point, in the order of the file. Random: an independent draw per
    trial index. Bayes: a proposal from the finished trials' metrics. Same seed, same trials.
    """
    runs = [_engine_run(sweep, r) for r in previous]
    with _seeded(seed, len(previous)), warnings_quiet():
        suggestion = sweeps.next_run(sweep.engine_spec, runs)
    if suggestion is None:
        return None
    return {k: _plain(v["value"]) for k, v in suggestion.config.items()}


def should_stop(sweep: Sweep, previous: Sequence[TrialRecord], current: TrialRecord) -> bool:
    """Hyperband's verdict on the running trial, from W&B's engine (False without it)."""
    if sweep.early_terminate is None:
        return False
    runs = [_engine_run(sweep, r) for r in previous]
    runs.append(_engine_run(sweep, current, state="running"))
    with warnings_quiet():
        stopped = sweeps.stop_runs(sweep.engine_spec, runs)
    return any(r.name == f"trial-{current.index}" for r in stopped)


@contextlib.contextmanager
def warnings_quiet() -> Iterator[None]:
    """The engine (written for pydantic 1 and older scikit-learn) warns on every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
