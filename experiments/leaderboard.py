"""Every generative family of genjax on one scale: one table and one picture.

    python -m experiments.leaderboard                    # the finished runs under runs/
    python -m experiments.leaderboard --train_missing    # first trains the missing families

Reads every run folder under --runs (each experiment's default workdir is runs/<name>): the
sample-quality figures and training wall time from its summary.json (or from evaluation.json
where `python -m experiments.evaluate` re-measured the same checkpoint), the likelihood bound
where the family has one, and from its newest checkpoint the parameter count, samples for
the picture and the sampling speed (images/s, timed here one family after another, so that
the column compares families on one machine). A family without a finished run gets a row
that says so, and a figure that cannot be compared with the others says why.

Writes WORKDIR/leaderboard.md, leaderboard.png and leaderboard.json, and one W&B run
(job_type "leaderboard") with the table (leaderboard/table) and the picture
(leaderboard/samples).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

import jax

from experiments import registry
from genjax import cli, images, run, wandb_logging
from genjax.config import ConfigError

# Every experiment that generates images: the ones with a sampler.
FAMILIES = tuple(name for name, m in registry.EXPERIMENTS.items() if hasattr(m, "sampler"))
# (column, its summary key or None when computed here); numbers, None where there is none.
COLUMNS = (
    ("family", None),
    ("run", None),
    ("FID", "eval/fid"),
    ("precision", "eval/precision"),
    ("recall", "eval/recall"),
    ("FID images", "eval/samples"),
    ("-log p bound (nats)", "eval/iwae_nll"),
    ("parameters", None),
    ("train min", None),
    ("samples/s", None),
    ("feature net", "eval/feature_net_sha256"),
)


@dataclasses.dataclass(frozen=True)
class LeaderboardConfig:
    """Every generative family's finished run in one table and one picture."""

    runs: str = "runs"  # The folder of run folders (each experiment's default: runs/<name>).
    workdir: str = ""  # Where the table and the picture go; "" = RUNS/leaderboard.
    families: str = ""  # Comma-separated experiments shown; "" = every generative one.
    # First train each family without a finished run into RUNS/<name>, at its defaults but
    # for the data, feature-network and W&B settings below (on a 2-core CPU about 70 min
    # for all of them but WGAN-GP, whose 30,000 iterations take about 5 hours there).
    train_missing: bool = False
    dataset: str = "fashion_mnist"  # The data of the runs --train_missing trains.
    data_dir: str = ""  # Their data folder; "" = the default.
    data_source: Literal["auto", "tfds", "idx"] = "auto"  # Where their data comes from.
    feature_net: str = ""  # Their FID feature network; "" = runs/feature_nets/<dataset>.
    shown: int = 10  # Samples of each family in the picture (conditional: classes in turn).
    speed_images: int = 100  # Images per timed sampler call behind samples/s.
    seed: int = 0  # The picture's samples: the same seed, the same samples.
    # W&B: auto = online with an API key, else offline; disabled logs nothing.
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    wandb_project: str = "genjax"  # W&B project.
    wandb_entity: str = ""  # W&B entity (user or team); "" = the key's default.
    wandb_init_timeout: float = 20.0  # Seconds an online W&B start may take before offline.
    progress: bool = True  # Progress bars of the runs --train_missing trains.

    def validate(self) -> None:
        unknown = sorted(set(self.family_list()) - set(FAMILIES))
        if unknown:
            raise ConfigError(
                f"--families={self.families}: {', '.join(unknown)} unknown; choose from "
                f"{', '.join(FAMILIES)}"
            )
        for name in ("shown", "speed_images"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name}={getattr(self, name)}: must be at least 1")
        if not self.wandb_init_timeout > 0:
            raise ConfigError(f"--wandb_init_timeout={self.wandb_init_timeout}: must be positive")
        if not self.train_missing and not Path(self.runs).is_dir():
            raise ConfigError(
                f"--runs={self.runs}: no such folder; train the families first (their "
                "commands, or --train_missing)"
            )

    def family_list(self) -> list[str]:
        return [f.strip() for f in self.families.split(",") if f.strip()] or list(FAMILIES)

    def out_dir(self) -> Path:
        return Path(self.workdir or Path(self.runs) / "leaderboard").resolve()


@dataclasses.dataclass
class Row:
    family: str
    folder: Path | None = None
    values: dict[str, Any] = dataclasses.field(default_factory=dict)  # By column name.
    notes: dict[str, str] = dataclasses.field(default_factory=dict)  # Why a cell is as it is.
    samples: Any = None  # uint8 [shown, H, W, C], or None.


def find_runs(folder: Path) -> dict[str, list[tuple[Path, bool]]]:
    """(run folder, finished) of every run folder directly under `folder`, by experiment."""
    known = {name: m.Config for name, m in registry.EXPERIMENTS.items()}
    found = collections.defaultdict(list)
    for sub in sorted(p for p in folder.iterdir() if (p / "checkpoints").is_dir()):
        try:
            name, _, _ = run.read_finished(sub, known)
        except ConfigError as e:  # Not a genjax run, or none of its checkpoints complete.
            print(f"leaderboard: skipped {sub}: {e}", file=sys.stderr)
            continue
        found[name].append((sub, (sub / "summary.json").exists()))
    return found


def train_missing(config: LeaderboardConfig, found: dict) -> None:
    """Trains (or finishes) the run of each family without a finished one, into RUNS/<name>
    (or the unfinished folder of that family), with every setting checked before any runs."""
    todo = []
    for name in config.family_list():
        runs = found.get(name, [])
        if any(done for _, done in runs):
            continue
        experiment = registry.EXPERIMENTS[name]
        workdir = runs[0][0] if runs else Path(config.runs) / name
        shared = ("dataset", "data_dir", "data_source", "wandb_mode", "wandb_project")
        shared += ("wandb_entity", "wandb_init_timeout", "progress")
        overrides = {k: getattr(config, k) for k in shared}
        if config.feature_net and hasattr(experiment.Config, "feature_net"):
            overrides["feature_net"] = config.feature_net
        run_config = experiment.Config(workdir=str(workdir), **overrides)
        run_config.validate()
        todo.append((experiment, run_config))
    for experiment, run_config in todo:
        print(f"leaderboard: training {experiment.NAME} into {run_config.workdir}", file=sys.stderr)
        experiment.train([run_config])


def parameter_count(state) -> int:
    """Parameters of every network the run trains (a GAN's discriminator included), not
    their optimizer's moments or moving averages."""

    def counted(path) -> bool:
        names = [getattr(k, "name", getattr(k, "key", None)) for k in path]
        return "params" in names and "opt_state" not in names

    leaves = jax.tree_util.tree_leaves_with_path(state)
    return sum(int(leaf.size) for path, leaf in leaves if counted(path))


def figures_of(folder: Path, step: int) -> dict[str, Any]:
    """summary.json's figures, with evaluation.json's over them where experiments.evaluate
    measured the same checkpoint (for example at another --eval_samples)."""
    figures = json.loads((folder / "summary.json").read_text())
    evaluation = folder / "evaluation.json"
    if evaluation.exists():
        again = json.loads(evaluation.read_text())
        if again.get("step") == step:
            figures |= {k: v for k, v in again.items() if k.startswith("eval/")}
    return figures


def measure(config: LeaderboardConfig, folder: Path) -> Row:
    """One finished run's row: its figures, parameters, wall time, samples and their speed."""
    experiment, run_config, state = registry.restore(folder)
    figures = figures_of(folder, int(state.step))
    row = Row(experiment.NAME, folder)
    for column, key in COLUMNS:
        if key is not None:
            row.values[column] = figures.get(key)
    if row.values["FID"] is None:
        row.notes["FID"] = (
            "not measured (--eval_samples=0): python -m experiments.evaluate "
            f"--workdir={folder} --eval_samples=10000"
        )
    if row.values["-log p bound (nats)"] is None:
        row.notes["-log p bound (nats)"] = experiment.LIKELIHOOD
    row.values["parameters"] = parameter_count(state)
    # Every process of a resumed run; runs from before time/train_s have their last one's.
    wall = figures.get("time/train_s", figures.get("time/wall_s"))
    row.values["train min"] = None if wall is None else wall / 60
    dataset = experiment.load_data(run_config)
    sampler = experiment.sampler(run_config, state, dataset)
    classes = dataset.info.num_classes
    key, timed_key = jax.random.split(jax.random.key(config.seed))
    row.samples = sampler.images(key, config.shown, classes)
    sampler.images(timed_key, config.speed_images, classes)  # Compiles this batch size.
    row.values["samples/s"] = config.speed_images / fastest_call(
        lambda: sampler.images(timed_key, config.speed_images, classes)
    )
    row.values["dataset"] = run_config.dataset
    changed = changed_settings(run_config, experiment.Config())
    if changed:
        row.notes["run"] = f"not at its defaults: {changed}"
    return row


# Settings that say where a run is or how it is watched, not what it trains.
PLACES = {"workdir", "data_dir", "data_source", "feature_net", "progress", "max_to_keep"}
PLACES |= {"checkpoint_interval", "min_free_disk_mb", "steps_per_dispatch", "eval_batch_size"}


def changed_settings(config, defaults) -> str:
    """The run's settings that differ from its family's defaults, as flags."""
    changed = [
        f"--{f.name}={getattr(config, f.name)} (default {getattr(defaults, f.name)})"
        for f in dataclasses.fields(config)
        if f.name not in PLACES
        and not f.name.startswith("wandb_")
        and getattr(config, f.name) != getattr(defaults, f.name)
    ]
    return ", ".join(changed)


def fastest_call(fn, seconds: float = 1.0, calls: int = 2) -> float:
    """The fastest of at least `calls` calls of fn, repeated for about `seconds`: one short
    call is mostly noise."""
    times, start = [], time.perf_counter()
    while len(times) < calls or time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return min(times)


def missing_row(config: LeaderboardConfig, name: str, unfinished: list[Path]) -> Row:
    row = Row(name)
    if unfinished:
        why = f"unfinished run {unfinished[0]}: rerun its command to finish it"
    else:
        why = f"no finished run under {config.runs}: python -m experiments.{name}"
    row.notes["run"] = f"{why} (or --train_missing)"
    return row


def compare(rows: list[Row]) -> None:
    """Notes on the FIDs that are not on the others' scale: another feature network, another
    dataset, or fewer images (FID's bias grows as the image count shrinks)."""
    measured = [r for r in rows if r.values.get("FID") is not None]
    if not measured:
        return

    def most_common(column):
        return collections.Counter(r.values[column] for r in measured).most_common(1)[0][0]

    net, dataset = most_common("feature net"), most_common("dataset")
    count = max(r.values["FID images"] for r in measured)
    for r in measured:
        if r.values["dataset"] != dataset:
            r.notes["FID"] = f"measured on {r.values['dataset']}, the others on {dataset}"
        elif r.values["feature net"] != net:
            r.notes["FID"] = (
                f"another feature network ({str(r.values['feature net'])[:12]}, the others' "
                f"{str(net)[:12]}): not comparable"
            )
        elif r.values["FID images"] < count:
            r.notes["FID"] = (
                f"of {r.values['FID images']:,.0f} images, the others' of {count:,.0f} (biased "
                f"upward): python -m experiments.evaluate --workdir={r.folder} "
                f"--eval_samples={count:.0f}"
            )


def cell(column: str, value: Any) -> str:
    """A number as the table shows it."""
    if value is None:
        return "—"
    if column == "feature net":
        return str(value)[:12]
    if column in ("parameters", "FID images") or (column == "samples/s" and value >= 100):
        return f"{value:,.0f}"
    if column in ("precision", "recall"):
        return f"{value:.3f}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def markdown(rows: list[Row]) -> str:
    """The table, each note a numbered footnote under it."""
    columns = [c for c, _ in COLUMNS]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    notes: list[str] = []
    for r in rows:
        cells = []
        for c in columns:
            text = r.family if c == "family" else r.folder.name if c == "run" and r.folder else ""
            text = text or cell(c, r.values.get(c))
            if c in r.notes:
                if r.notes[c] not in notes:
                    notes.append(r.notes[c])
                text = f"{text} [{notes.index(r.notes[c]) + 1}]"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + [f"[{i}] {n}  " for i, n in enumerate(notes, 1)]) + "\n"


def picture(rows: list[Row]):
    shown = [r for r in rows if r.samples is not None]
    labels = [
        (r.family if r.folder.name == r.family else f"{r.family} ({r.folder.name})")
        + f"\nFID {cell('FID', r.values.get('FID'))}"
        for r in shown
    ]
    title = "every family's samples (conditional ones: one class after another)"
    return images.labelled_rows([r.samples for r in shown], labels, title) if shown else None


def table_rows(rows: list[Row]) -> tuple[list[str], list[list[Any]]]:
    """W&B's table: numbers (None where there is none: text in a numeric column makes W&B
    drop the table) and a notes column that says why."""
    columns = [c for c, _ in COLUMNS] + ["notes"]
    out = []
    for r in rows:
        values = {**r.values, "family": r.family, "run": str(r.folder or "")}
        notes = "; ".join(f"{k}: {v}" for k, v in r.notes.items())
        out.append([values.get(c) for c, _ in COLUMNS] + [notes])
    return columns, out


def leaderboard(config: LeaderboardConfig) -> dict:
    out_dir = config.out_dir()
    runs_dir = Path(config.runs)
    if config.train_missing:
        runs_dir.mkdir(parents=True, exist_ok=True)
        train_missing(config, find_runs(runs_dir))
    found = find_runs(runs_dir)
    rows = []
    for name in config.family_list():
        finished = [folder for folder, done in found.get(name, []) if done]
        unfinished = [folder for folder, done in found.get(name, []) if not done]
        rows += [measure(config, f) for f in finished] or [missing_row(config, name, unfinished)]
    compare(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    (out_dir / "leaderboard.md").write_text(table)
    pic = picture(rows)
    if pic is not None:
        images.save_png(pic, out_dir / "leaderboard.png")
    columns, cells = table_rows(rows)
    result = {"columns": columns, "rows": cells}
    (out_dir / "leaderboard.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    session = wandb_logging.Session(
        directory=out_dir,
        config=dataclasses.asdict(config),
        mode=config.wandb_mode,
        project=config.wandb_project,
        entity=config.wandb_entity,
        name="leaderboard",
        job_type="leaderboard",
        init_timeout=config.wandb_init_timeout,
    )
    pictures = {"leaderboard/samples": (pic, "one row per run")} if pic is not None else {}
    session.log(1, {}, images=pictures, tables={"leaderboard/table": (columns, cells)})
    session.finish()
    print(table)
    print(f"written to {out_dir} (leaderboard.md, leaderboard.png, leaderboard.json)")
    if session.mode == "offline":
        print(session.describe()["sync_command"])
    result["wandb_run"] = session.describe()
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "python -m experiments.leaderboard"
    return cli.main(lambda: leaderboard(cli.parse(LeaderboardConfig, argv, prog=prog)))


if __name__ == "__main__":
    cli.exit_with(main())
