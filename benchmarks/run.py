"""Training speed of genjax's models, timed on the code path their experiments run.

    python -m benchmarks.run                          # the report's three models, batch 32, 128
    python -m benchmarks.run --models=dcgan --batch_sizes=32 --seconds=60

Each (model, batch size) case runs in its own process, so that its compile time and peak
host memory are its own (benchmarks/cases.py). Reported per case: training steps per second
and images per second (steady state, after the first dispatch), compile time (the first
dispatch's time minus a steady one), peak host memory, FLOPs per step (benchmarks/flops.py:
the matmuls and convolutions of one jitted step, counted from its jaxpr), achieved GFLOP/s
and its share of this machine's float32 matmul peak, measured first with one large jitted
matmul. Prints a table and writes JSON (--out). --compare=keras,torch times the same models
in those frameworks, --compare=xla_defaults genjax's step with XLA's default options;
--floor=true times each step's matmuls, convolutions and optimizer update alone, beside the
step; --logging_cost=true runs each experiment for its logging share.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Literal

import jax

from benchmarks import cases, logging_cost
from benchmarks.timing import matmul_peak, peak_rss_mb
from experiments import registry
from genjax import cli, data
from genjax.config import ConfigError

MODELS = ("autoencoder", "vae", "dcgan")  # The report's three, timed by default.
_ROOT = Path(__file__).resolve().parents[1]
# Framework -> (the module that must be importable, how to install it); the models are in
# benchmarks/FRAMEWORK_models.py or benchmarks/FRAMEWORK_<model>.py (framework_module).
FRAMEWORKS = {
    "keras": ("tensorflow", "pip install tensorflow-cpu keras (GPU: tensorflow)"),
    "torch": ("torch", "pip install torch --index-url https://download.pytorch.org/whl/cpu"),
    # genjax's own case, its step compiled with XLA's defaults instead of its family's
    # CPU_COMPILER_OPTIONS: what those options buy, timed side by side.
    "xla_defaults": ("jax", ""),
}
XLA_DEFAULTS_LABEL = "genjax, XLA's default options"


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """Speed of genjax's models against this machine's matmul peak and other frameworks."""

    models: str = ",".join(MODELS)  # Experiments to time, comma-separated.
    batch_sizes: str = "32,128"  # Comma-separated; every model at each.
    seconds: float = 20.0  # Steady-state time per case (at least two dispatches).
    matmul_size: int = 4096  # n of the n x n x n float32 matmul that measures the peak.
    # Steps per timed dispatch; 0 = the experiments' defaults (steps_per_dispatch 500 for the
    # autoencoder and VAE, gen_interval 50 for the DCGAN).
    dispatch_steps: int = 0
    dataset: str = "fashion_mnist"  # The images the timed steps train on: fashion_mnist, mnist.
    data_dir: str = ""  # A tfds data folder or a folder of the four IDX files; "" = defaults.
    data_source: Literal["auto", "tfds", "idx"] = "auto"  # Where the data comes from.
    out: str = ""  # "" = runs/benchmark/<backend>.json
    # Also time the same models in other frameworks, where installed: "keras" (TensorFlow
    # backend, the report's), "torch"; or "xla_defaults" (genjax's step without its
    # family's XLA:CPU options); comma-separated. Their ratios are printed.
    compare: str = ""
    # Rounds: in each, every case runs once in genjax and then in each --compare framework,
    # interleaved so that a machine that slows down mid-run affects both sides; the medians
    # are reported.
    repeats: int = 1
    # Also run each model's experiment with W&B offline at its default intervals and report
    # the share of its wall time spent making pictures and logging (summary.json's time/*).
    logging_cost: bool = False
    # More flags for the experiments --logging_cost runs, space-separated ("--epochs=1"
    # replaces the default: the experiment's own epochs (20), the DCGAN 200 iterations).
    logging_flags: str = ""
    # Also time each matmul and convolution of the step alone, and the optimizer update
    # alone: how much of the step is kernels that any framework on this machine runs, and
    # how much is the rest (elementwise work, data gathering, dispatch).
    floor: bool = False
    case: str = ""  # Internal: "model:batch" runs one case in this process, prints JSON.

    def compare_list(self) -> list[str]:
        return [c for c in self.compare.split(",") if c]

    def model_list(self) -> list[str]:
        return [m for m in self.models.split(",") if m]

    def batch_list(self) -> list[int]:
        try:
            return [int(b) for b in self.batch_sizes.split(",") if b]
        except ValueError:
            raise ConfigError(
                f"--batch_sizes={self.batch_sizes}: expected integers separated by commas"
            ) from None

    def validate(self) -> None:
        unknown = sorted(set(self.model_list()) - set(registry.EXPERIMENTS))
        if unknown or not self.model_list():
            raise ConfigError(
                f"--models={self.models}: choose from {', '.join(registry.EXPERIMENTS)} "
                "(comma-separated)"
            )
        if not self.batch_list() or min(self.batch_list()) < 1:
            raise ConfigError(f"--batch_sizes={self.batch_sizes}: positive integers, please")
        if not self.seconds > 0:
            raise ConfigError(f"--seconds={self.seconds}: must be positive")
        if self.dispatch_steps < 0:
            raise ConfigError(f"--dispatch_steps={self.dispatch_steps}: must be 0 or more")
        if self.matmul_size < 1:
            raise ConfigError(f"--matmul_size={self.matmul_size}: must be at least 1")
        if self.repeats < 1:
            raise ConfigError(f"--repeats={self.repeats}: must be at least 1")
        unknown = sorted(set(self.compare_list()) - set(FRAMEWORKS))
        if unknown:
            raise ConfigError(
                f"--compare={self.compare}: choose from {', '.join(FRAMEWORKS)} (comma-separated)"
            )
        if self.out and not self.out.endswith(".json"):
            raise ConfigError(f"--out={self.out}: must name a .json file")


def framework_module(framework: str, name: str) -> str:
    """Where a model's FRAMEWORK side lives: benchmarks/FRAMEWORK_NAME.py for a family that
    has its own (each later family its file), else benchmarks/FRAMEWORK_models.py (the
    report's three)."""
    own = f"benchmarks.{framework}_{name}"
    return own if importlib.util.find_spec(own) is not None else f"benchmarks.{framework}_models"


def _other_case(framework: str, name: str, batch: int, config: BenchmarkConfig) -> dict:
    other = importlib.import_module(framework_module(framework, name))
    dataset = data.load_dataset(config.dataset, config.data_dir, config.data_source)
    images = dataset.train.images.astype("float32") / 255.0
    steps = cases.steps_per_dispatch(name, config)
    row = other.time_model(name, batch, steps, config.seconds, images)
    return {**row, "model": name, "batch_size": batch, "peak_host_mb": peak_rss_mb()}


def run_case(config: BenchmarkConfig) -> dict:
    name, _, batch = config.case.partition(":")
    framework, _, name = name.rpartition("/")
    if framework == "xla_defaults":
        row = cases.case(name, int(batch), config, xla_defaults=True)
        return {**row, "framework": XLA_DEFAULTS_LABEL}
    if framework:
        return _other_case(framework, name, int(batch), config)
    if name == "matmul":
        # Three seconds a side find the ceiling; a shorter --seconds (a quick check) caps it.
        peak = matmul_peak(config.matmul_size, seconds=min(3.0, config.seconds))
        return {**peak, "peak_host_mb": peak_rss_mb()}
    return cases.case(name, int(batch), config)


def _child(config: BenchmarkConfig, case: str) -> dict:
    """One case in a fresh process: its own compile cache, memory peak and threads."""
    argv = [f"--{f.name}={getattr(config, f.name)}" for f in dataclasses.fields(config)]
    argv = [a for a in argv if not a.startswith("--case=")] + [f"--case={case}"]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *argv],
        capture_output=True,
        text=True,
        cwd=_ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"benchmark case {case} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _text_table(columns: list[tuple[str, str, int]], lines: list[list[str]]) -> str:
    """A plain-text table: columns are (title, "<" or ">", width), a rule under the titles."""

    def line(cells):
        return "".join(
            f"{c:{align}{width}}" for c, (_, align, width) in zip(cells, columns, strict=True)
        )

    head = line([title for title, _, _ in columns])
    return "\n".join([head, "-" * len(head), *(line(cells) for cells in lines)])


def _table(rows: list[dict], peak: float) -> str:
    columns = [("model", "<", 12), ("batch", ">", 6), ("steps/s", ">", 10)]
    columns += [("images/s", ">", 11), ("compile s", ">", 11), ("peak MB", ">", 9)]
    columns += [("GFLOP/step", ">", 12), ("GFLOP/s", ">", 9), ("of peak", ">", 9)]
    lines = [
        [
            r["model"],
            str(r["batch_size"]),
            f"{r['steps_per_s']:.1f}",
            f"{r['images_per_s']:.0f}",
            f"{r['compile_s']:.2f}",
            f"{r['peak_host_mb']:.0f}",
            f"{r['gflop_per_step']:.4f}",
            f"{r['gflops']:.1f}",
            f"{r['gflops'] / peak:.1%}",
        ]
        for r in rows
    ]
    return _text_table(columns, lines)


def _frameworks(config: BenchmarkConfig) -> tuple[list[str], list[dict]]:
    """The --compare frameworks that can run here, and a row for each that cannot."""
    ready, skipped = [], []
    for framework in config.compare_list():
        module, install = FRAMEWORKS[framework]
        reason = ""
        if importlib.util.find_spec(module) is None:
            reason = f"not installed: {install}"
        if reason:
            print(f"{framework}: skipped ({reason})", file=sys.stderr)
            skipped.append({"framework": framework, "skipped": reason})
        else:
            ready.append(framework)
    return ready, skipped


def _median(rows: list[dict]) -> dict:
    """The round with the median steps/s (the lower middle one of an even count), with every
    round's figure beside it."""
    ordered = sorted(rows, key=lambda r: r["steps_per_s"])
    return {
        **ordered[(len(ordered) - 1) // 2],
        "rounds_steps_per_s": [r["steps_per_s"] for r in rows],
    }


def _comparison_table(rows: list[dict], others: list[dict]) -> str:
    columns = [("model", "<", 12), ("batch", ">", 6), ("genjax steps/s", ">", 16)]
    columns += [("  other", "<", 60), ("steps/s", ">", 9), ("genjax x", ">", 10)]
    by_key = {(r["model"], r["batch_size"]): r for r in rows}
    lines = []
    for o in others:
        if "speedup" not in o:
            continue
        settings = []
        if o.get("jit_compile"):
            settings.append("XLA")
        if o.get("steps_per_execution", 1) > 1:
            settings.append(f"{o['steps_per_execution']} steps/call")
        other = o["framework"] + (f" ({', '.join(settings)})" if settings else "")
        mine = by_key[(o["model"], o["batch_size"])]["steps_per_s"]
        lines.append(
            [
                o["model"],
                str(o["batch_size"]),
                f"{mine:.1f}",
                f"  {other}",
                f"{o['steps_per_s']:.1f}",
                f"{o['speedup']:.2f}",
            ]
        )
    return _text_table(columns, lines)


def benchmark(config: BenchmarkConfig) -> dict:
    if config.case:
        row = run_case(config)
        print(json.dumps(row))
        return row
    machine = {
        "backend": jax.default_backend(),
        "devices": [d.device_kind for d in jax.devices()],
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
    }
    print(f"{machine['backend']}: {', '.join(machine['devices'])}", file=sys.stderr)
    matmul = _child(config, "matmul")
    peak = matmul["matmul_gflops"]
    print(
        f"float32 matmul peak ({config.matmul_size}^3): {peak:.1f} GFLOP/s "
        f"(XLA {matmul['xla_gflops']:.1f}, NumPy {matmul['numpy_gflops']:.1f})",
        file=sys.stderr,
    )
    frameworks, skipped = _frameworks(config)
    cases = [(name, batch) for name in config.model_list() for batch in config.batch_list()]
    timed: dict[tuple, list[dict]] = {}
    failed: list[dict] = []
    for round_ in range(config.repeats):
        for name, batch in cases:
            for framework in ["genjax", *frameworks]:
                label = "" if framework == "genjax" else f"{framework} "
                where = f"round {round_ + 1}/{config.repeats}"
                print(f"{where}: timing {label}{name} at batch {batch} ...", file=sys.stderr)
                case = f"{name}:{batch}" if framework == "genjax" else f"{framework}/{name}:{batch}"
                try:
                    row = _child(config, case)
                except RuntimeError as e:
                    if framework == "genjax":
                        raise
                    print(f"{framework} {name}: failed ({e})", file=sys.stderr)
                    failed.append({"framework": framework, "model": name, "failed": str(e)[-500:]})
                    continue
                timed.setdefault((framework, name, batch), []).append(row)
    rows = []
    for name, batch in cases:
        row = _median(timed[("genjax", name, batch)])
        row["of_peak"] = row["gflops"] / peak
        rows.append(row)
    print(_table(rows, peak))
    others = []
    for framework in frameworks:
        for row in rows:
            key = (framework, row["model"], row["batch_size"])
            if key in timed:
                other = _median(timed[key])
                other["speedup"] = row["steps_per_s"] / other["steps_per_s"]
                others.append(other)
    if others:
        print(_comparison_table(rows, others))
    if config.floor:
        print(_floor_table(rows))
    logging_rows = []
    if config.logging_cost:
        for name in config.model_list():
            print(f"running the {name} experiment for its logging cost ...", file=sys.stderr)
            logging_rows.append(logging_cost.case(name, config))
        print(_logging_table(logging_rows))
    result = {"machine": machine, **{k: v for k, v in matmul.items() if k.endswith("gflops")}}
    result["config"] = dataclasses.asdict(config)
    result["rows"] = rows
    result["comparisons"] = others + skipped + failed
    result["logging"] = logging_rows
    out = Path(config.out or Path("runs", "benchmark", f"{machine['backend']}.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return result


def _floor_table(rows: list[dict]) -> str:
    columns = [("model", "<", 12), ("batch", ">", 6), ("step ms", ">", 9)]
    columns += [("matmuls+convs alone", ">", 21), ("GFLOP/s", ">", 9)]
    columns += [("optimizer alone", ">", 17), ("rest", ">", 9), ("rest share", ">", 12)]
    lines = []
    for r in rows:
        f = r["floor"]
        optimizer = "-" if f["optimizer_ms"] is None else f"{f['optimizer_ms']:.3f}"
        lines.append(
            [
                r["model"],
                str(r["batch_size"]),
                f"{f['step_ms']:.3f}",
                f"{f['products_ms']:.3f}",
                f"{f['products_gflops']:.1f}",
                optimizer,
                f"{f['rest_ms']:.3f}",
                f"{f['rest_ms'] / f['step_ms']:.1%}",
            ]
        )
    return _text_table(columns, lines)


def _logging_table(rows: list[dict]) -> str:
    columns = [("experiment", "<", 48), ("wall s", ">", 9), ("logging share", ">", 15)]
    lines = [[r["command"], f"{r['wall_s']:.1f}", f"{r['logging_share']:.1%}"] for r in rows]
    return _text_table(columns, lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "python -m benchmarks.run"
    return cli.main(lambda: benchmark(cli.parse(BenchmarkConfig, argv, prog=prog)))


if __name__ == "__main__":
    cli.exit_with(main())
