"""Training speed of genjax's models, timed on the code path their experiments run.

    python -m experiments.benchmark                          # every model, batch 32 and 128
    python -m experiments.benchmark --models=dcgan --batch_sizes=32 --seconds=60

Each (model, batch size) case runs in its own process, so that its compile time and peak
host memory are its own: the autoencoder and the VAE as EpochTrainer runs them
(fused.train_steps, --steps_per_dispatch steps per dispatch, metrics fetched after each), the
DCGAN as its experiment's trainer runs it (run_segment over --gen_interval iterations: one
jitted call per iteration on CPU, one lax.scan elsewhere), all on the full training split
held on the device. Reported per case: training steps per second and images per second
(steady state, after the first dispatch), compile time (the first dispatch's time minus a
steady one), peak host memory (the process's maximum resident set), FLOPs per step
(genjax/flops.py: the matmuls and convolutions of one jitted step, counted from its jaxpr),
achieved GFLOP/s and its share of this machine's float32 matmul peak, measured first with
one large jitted matmul. Prints a table and writes JSON (--out). --compare=keras,torch times
the same models in those frameworks; --floor=true times each step's matmuls, convolutions and
optimizer update alone, beside the step.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from genjax import cli, data, flops, loop
from genjax.config import ConfigError, parse_flags
from genjax.steps import fused

MODELS = ("autoencoder", "vae", "dcgan")
_ROOT = Path(__file__).resolve().parents[1]
# Framework -> (the module that must be importable, how to install it); the models are in
# experiments/benchmark_FRAMEWORK.py.
FRAMEWORKS = {
    "keras": ("tensorflow", "pip install tensorflow-cpu keras (GPU: tensorflow)"),
    "torch": ("torch", "pip install torch --index-url https://download.pytorch.org/whl/cpu"),
}


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    models: str = ",".join(MODELS)  # Comma-separated.
    batch_sizes: str = "32,128"  # Comma-separated; every model at each.
    seconds: float = 20.0  # Steady-state time per case (at least two dispatches).
    matmul_size: int = 4096  # n of the n x n x n float32 matmul that measures the peak.
    # Steps per timed dispatch; 0 = the experiments' defaults (steps_per_dispatch 500 for the
    # autoencoder and VAE, gen_interval 50 for the DCGAN).
    dispatch_steps: int = 0
    dataset: str = "fashion_mnist"
    data_dir: str = ""
    data_source: str = "auto"
    out: str = ""  # "" = runs/benchmark/<backend>.json
    # Also time the same models in other frameworks, where installed: "keras" (TensorFlow
    # backend, the report's), "torch"; comma-separated. Their ratios are printed.
    compare: str = ""
    # Rounds: in each, every case runs once in genjax and then in each --compare framework
    # (interleaved, so a machine that slows down mid-run affects both sides); the medians
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
        unknown = sorted(set(self.model_list()) - set(MODELS))
        if unknown or not self.model_list():
            raise ConfigError(
                f"--models={self.models}: choose from {', '.join(MODELS)} (comma-separated)"
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


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _best_gflops(product, n: int, seconds: float) -> float:
    """The fastest of short bursts of n x n x n products: a ceiling, so the best is kept."""
    product()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end or best == 0.0:
        start, calls = time.perf_counter(), 0
        while calls < 2 or time.perf_counter() - start < 0.25:
            product()
            calls += 1
        best = max(best, 2 * n**3 * calls / (time.perf_counter() - start) / 1e9)
    return best


def matmul_peak(n: int, seconds: float = 3.0) -> dict[str, float]:
    """This machine's float32 matmul ceiling in GFLOP/s: an n x n x n product by XLA (jitted)
    and by NumPy's BLAS; `matmul_gflops` is the faster, the ceiling genjax is held to."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    product = jax.jit(jnp.dot)
    xla = _best_gflops(lambda: product(a, b).block_until_ready(), n, seconds)
    a_host, b_host = np.asarray(a), np.asarray(b)
    blas = _best_gflops(lambda: a_host @ b_host, n, seconds)
    return {"xla_gflops": xla, "numpy_gflops": blas, "matmul_gflops": max(xla, blas)}


def timed(call, seconds: float, warmup: int = 1, min_calls: int = 2) -> tuple[float, float, int]:
    """(seconds of the first `warmup` calls, steady seconds per call, steady calls): calls
    repeated for `seconds`, at least `min_calls` times. Every framework's cases use it."""
    start = time.perf_counter()
    for _ in range(warmup):
        call()
    first = time.perf_counter() - start
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        call()
        calls += 1
    return first, (time.perf_counter() - start) / calls, calls


# Runs of a product per timed call: a chain, each run's input changed by the previous run's
# output, so that nothing can be hoisted, cached or run concurrently.
_CHAIN = 16


def _chained(run, carried: jax.Array, rest: tuple, seconds: float) -> float:
    """Seconds per run of run(carried, *rest) in a jitted chain of _CHAIN runs. One element
    of `carried` is set from the last run's output sum, so the chain adds one pass reading
    each output (a few percent of a matmul's time) and nothing else."""

    def body(carry, _):
        x, feed = carry
        x = x.at[(0,) * x.ndim].set(jnp.tanh(feed).astype(x.dtype))
        out = run(x, *rest)
        return (x, sum(jnp.sum(leaf) for leaf in jax.tree.leaves(out))), None

    chain = jax.jit(lambda x, rest: jax.lax.scan(body, (x, 0.0), length=_CHAIN)[0][1])
    _, per_call, _ = timed(lambda: chain(carried, rest).block_until_ready(), seconds)
    return per_call / _CHAIN


def _channels_last(product: flops.Product, operands: list[jax.Array]):
    """A convolution restated on operands transposed to NHWC / HWIO (out NHWC): the same
    products. Inside a step XLA lays out a convolution's operands as its kernels want them
    (the producers write that layout); alone, arrays arrive row-major, and a convolution
    whose dimension numbers don't match that (a kernel gradient: batch as the contracted
    feature) was measured at 1 to 190 ms from run to run for a product that takes 1 ms
    restated."""
    lhs, rhs, out = product.params["dimension_numbers"]
    n = len(lhs)
    lhs_order = (lhs[0], *lhs[2:], lhs[1])
    rhs_order = (*rhs[2:], rhs[1], rhs[0])
    nhwc, hwio = (0, n - 1, *range(1, n - 1)), (n - 1, n - 2, *range(n - 2))
    dimension_numbers = jax.lax.ConvDimensionNumbers(nhwc, hwio, nhwc)
    params = {**product.params, "dimension_numbers": dimension_numbers}
    run = functools.partial(product.primitive.bind, **params)
    return run, [operands[0].transpose(lhs_order), operands[1].transpose(rhs_order)]


def product_seconds(product: flops.Product, seconds: float) -> float:
    """Seconds one run of a step's matmul or convolution takes alone on this device: the
    same primitive, shapes and parameters, random operands (a convolution's in the layout
    its kernels want, as inside a step; see _channels_last)."""
    keys = jax.random.split(jax.random.key(0), len(product.operands))
    operands = [
        jax.random.normal(k, o.shape, o.dtype) for k, o in zip(keys, product.operands, strict=True)
    ]
    run = product.run
    if product.primitive.name == "conv_general_dilated":
        run, operands = _channels_last(product, operands)
    return _chained(run, operands[0], tuple(operands[1:]), seconds)


def optimizer_seconds(state, seconds: float) -> float:
    """Seconds of one state.apply_gradients alone (the optimizer's update of every
    parameter), with fixed gradients of the parameters' shapes, the state carried from one
    update to the next as in the training loop."""
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), state.params)

    def updates(state, grads):
        step = lambda s, _: (s.apply_gradients(grads=grads), None)  # noqa: E731
        return jax.lax.scan(step, state, length=_CHAIN)[0]

    chain = jax.jit(updates, donate_argnums=0)
    box = {"state": jax.tree.map(jnp.copy, state)}

    def call():
        box["state"] = chain(box["state"], grads)
        jax.block_until_ready(box["state"])

    _, per_call, _ = timed(call, seconds)
    return per_call / _CHAIN


def _floor(row: dict, step_products: list[flops.Product], state, seconds: float) -> dict:
    """The step beside its parts timed alone (--floor); milliseconds per training step."""
    each = max(seconds / (len(step_products) + 1), 0.05)
    times = [product_seconds(p, each) * p.times for p in step_products]
    optimizer = optimizer_seconds(state, each) if state is not None else None
    step = 1e3 / row["steps_per_s"]
    kernels = 1e3 * sum(times)
    parts = kernels + (1e3 * optimizer if optimizer is not None else 0.0)
    return {
        "step_ms": step,
        "products_ms": kernels,
        "products_gflops": row["gflop_per_step"] / kernels * 1e3,
        "optimizer_ms": None if optimizer is None else 1e3 * optimizer,
        "rest_ms": step - parts,
        "products": [
            {"product": p.describe(), "times": p.times, "ms": 1e3 * t}
            for p, t in zip(step_products, times, strict=True)
        ],
    }


def _run_config(config_cls, batch: int, config: BenchmarkConfig, **overrides):
    """The experiment's own config at this batch size and data, logging nothing."""
    return config_cls(
        batch_size=batch,
        dataset=config.dataset,
        data_dir=config.data_dir,
        data_source=config.data_source,
        wandb_mode="disabled",
        progress=False,
        **overrides,
    )


def _epoch_case(name: str, batch: int, config: BenchmarkConfig) -> dict:
    from experiments import autoencoder, vae

    experiment = {"autoencoder": autoencoder.EXPERIMENT, "vae": vae.EXPERIMENT}[name]
    overrides = {"eval_samples": 0} if name == "vae" else {}
    run_config = _run_config(experiment.config_cls, batch, config, **overrides)
    dataset = experiment.load_data(run_config)
    family = experiment.family(run_config)
    keys = loop.run_keys(run_config.seed)
    state = experiment.trial(run_config, dataset, None).init_state(keys.init)
    split = data.to_device(dataset.train)
    per_epoch = loop.steps_per_epoch(run_config, len(split))
    num_steps = min(_steps_per_dispatch(name, config), per_epoch)
    static = dict(
        train_step=family.train_step,
        num_steps=num_steps,
        batch_size=batch,
        pixel_range=family.pixel_range,
    )
    box = {"state": state, "dispatches": 0}
    per_order = len(fused.chunks(per_epoch, num_steps))  # Dispatches sharing an epoch order.

    def dispatch():  # As EpochTrainer: one fused dispatch, then its metrics on the host.
        epoch, at = divmod(box["dispatches"], per_order)
        if at == 0:  # EpochTrainer draws each epoch's order once, before its dispatches.
            box["order"] = fused.epoch_order(keys.data, jnp.int32(epoch), n=len(split))
        box["state"], metrics = fused.train_steps(
            box["state"],
            split.images,
            split.labels,
            keys.step,
            box["order"],
            jnp.int32(0),
            **static,
        )
        jax.device_get(metrics)
        box["dispatches"] += 1

    first, per_dispatch, calls = timed(dispatch, config.seconds)
    example = {
        "image": jnp.zeros((batch, *dataset.info.image_shape), jnp.float32),
        "label": jnp.zeros((batch,), jnp.int32),
    }
    step_flops = flops.count(family.train_step, box["state"], example, keys.step)
    row = _row(name, batch, num_steps, first, per_dispatch, calls, step_flops)
    if config.floor:
        step_products = flops.products(family.train_step, box["state"], example, keys.step)
        row["floor"] = _floor(row, step_products, box["state"], config.seconds)
    return row


def _dcgan_case(batch: int, config: BenchmarkConfig) -> dict:
    from experiments import dcgan
    from genjax.config import DCGANConfig
    from genjax.steps import dcgan as gan_steps

    run_config = _run_config(DCGANConfig, batch, config, eval_samples=0)
    dataset = dcgan.load_data(run_config)
    keys = loop.run_keys(run_config.seed)
    state = dcgan.trial(run_config, dataset, None).init_state(keys.init)
    trainer = dcgan.trainer(run_config, dataset)
    length = _steps_per_dispatch("dcgan", config)
    box = {"state": state, "start": 0}

    def dispatch():  # As IterationTrainer: one segment, then its metrics on the host.
        box["state"], metrics = trainer.run_segment(
            box["state"], box["start"], length, lambda: False
        )
        jax.device_get(metrics)
        box["start"] += length

    first, per_dispatch, calls = timed(dispatch, config.seconds)
    bound = gan_steps.GANSteps(run_config.latent_dim, batch, run_config.sampling)
    images = data.to_device(dataset.train).images
    step_flops = flops.count(bound.iteration, box["state"], images, keys.step, keys.data)
    row = _row("dcgan", batch, length, first, per_dispatch, calls, step_flops)
    if config.floor:
        # The iteration's three Adam updates (the discriminator's 0.39M parameters twice,
        # the generator's 0.86M once) stay in its rest: small beside 13.6 GFLOP (batch 32)
        # of convolutions.
        args = (box["state"], images, keys.step, keys.data)
        row["floor"] = _floor(row, flops.products(bound.iteration, *args), None, config.seconds)
    return row


def _row(name, batch, steps_per_dispatch, first, per_dispatch, calls, step_flops) -> dict:
    steps_per_s = steps_per_dispatch / per_dispatch
    return {
        "model": name,
        "batch_size": batch,
        "steps_per_s": steps_per_s,
        "images_per_s": steps_per_s * batch,
        "compile_s": max(first - per_dispatch, 0.0),
        "peak_host_mb": _peak_rss_mb(),
        "gflop_per_step": step_flops / 1e9,
        "gflops": step_flops * steps_per_s / 1e9,
        "steps_per_dispatch": steps_per_dispatch,
        "timed_dispatches": calls,
    }


def _steps_per_dispatch(name: str, config: BenchmarkConfig) -> int:
    return config.dispatch_steps or (50 if name == "dcgan" else 500)


def _other_case(framework: str, name: str, batch: int, config: BenchmarkConfig) -> dict:
    other = importlib.import_module(f"experiments.benchmark_{framework}")
    dataset = data.load_dataset(config.dataset, config.data_dir, config.data_source)
    images = dataset.train.images.astype("float32") / 255.0
    steps = _steps_per_dispatch(name, config)
    row = other.time_model(name, batch, steps, config.seconds, images)
    return {**row, "model": name, "batch_size": batch, "peak_host_mb": _peak_rss_mb()}


def run_case(config: BenchmarkConfig) -> dict:
    name, _, batch = config.case.partition(":")
    framework, _, name = name.rpartition("/")
    if framework:
        return _other_case(framework, name, int(batch), config)
    if name == "matmul":
        return {**matmul_peak(config.matmul_size), "peak_host_mb": _peak_rss_mb()}
    if name == "dcgan":
        return _dcgan_case(int(batch), config)
    return _epoch_case(name, int(batch), config)


def _child(config: BenchmarkConfig, case: str) -> dict:
    """One case in a fresh process: its own compile cache, memory peak and threads."""
    argv = [f"--{f.name}={getattr(config, f.name)}" for f in dataclasses.fields(config)]
    argv = [a for a in argv if not a.startswith("--case=")] + [f"--case={case}"]
    result = subprocess.run(
        [sys.executable, "-m", "experiments.benchmark", *argv],
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


def _logging_case(name: str, config: BenchmarkConfig) -> dict:
    """The experiment itself, W&B offline, default intervals, sample evaluation off (the
    autoencoder's end-of-run reconstruction error still runs): the share of its wall time
    that making pictures and logging took (summary.json's time/*)."""
    import tempfile

    # The autoencoder and the VAE as a user runs them (20 epochs): 19 dispatches beside
    # logging for the dispatch clock to compare with ~55 alone, and the first epoch's
    # compile and one-off imports weighed as in a real run. The DCGAN: 200 iterations.
    length = {"dcgan": ["--iterations=200"]}.get(name, [])
    extra = config.logging_flags.split()
    if any(f.startswith(("--epochs=", "--iterations=")) for f in extra):
        length = []
    evaluation = [] if name == "autoencoder" else ["--eval_samples=0"]
    evaluation += extra
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            sys.executable,
            "-m",
            f"experiments.{name}",
            *length,
            *evaluation,
            f"--workdir={tmp}/run",
            "--wandb_mode=offline",
            "--progress=false",
            f"--dataset={config.dataset}",
            f"--data_dir={config.data_dir}",
            f"--data_source={config.data_source}",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=_ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[2:])} failed:\n{done.stderr[-3000:]}")
        summary = json.loads(Path(tmp, "run", "summary.json").read_text())
    timings = {k.removeprefix("time/"): v for k, v in summary.items() if k.startswith("time/")}
    return {"model": name, "command": " ".join([name, *length, *evaluation]), **timings}


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
            logging_rows.append(_logging_case(name, config))
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
    columns = [("experiment", "<", 36), ("wall s", ">", 9), ("logging s", ">", 11)]
    columns += [("share", ">", 8), ("after 1st", ">", 11), ("W&B thread s", ">", 14)]
    columns += [("dispatches beside/alone", ">", 25), ("beside s", ">", 10), ("cost", ">", 7)]
    columns += [("cost after 1st", ">", 16)]
    lines = []
    for r in rows:
        # The dispatch clock's estimate (genjax/loop.py, DispatchClock), where it had
        # dispatches of both kinds; the GAN's segments are all followed by logging.
        beside = "n/a", "n/a", "n/a", "n/a"
        if "dispatches_alone" in r:
            beside = f"{r['dispatches_beside_logging']}/{r['dispatches_alone']}", *beside[1:]
        if "logging_beside_s" in r:
            beside = (
                beside[0],
                f"{r['logging_beside_s']:.2f}",
                f"{r['logging_cost_share']:.1%}",
                f"{r['logging_cost_share_after_first']:.1%}",
            )
        lines.append(
            [
                r["command"],
                f"{r['wall_s']:.1f}",
                f"{r['logging_s']:.2f}",
                f"{r['logging_share']:.1%}",
                f"{r['logging_share_after_first']:.1%}",
                f"{r['logging_worker_s']:.2f}",
                *beside,
            ]
        )
    return _text_table(columns, lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: benchmark(parse_flags(BenchmarkConfig, argv)))


if __name__ == "__main__":
    sys.exit(main())
