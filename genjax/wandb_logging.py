"""The only module that imports wandb: choosing the mode, logging, and reading runs back.

W&B must never stop or stall training: the mode is decided before `wandb.init` (online only
with a key, which is handed to W&B, so it never prompts for one), an online init that fails
or times out falls back to offline, and logging errors are reported once and then ignored.
Rows are turned into W&B objects and logged by one worker thread, off the training loop's
critical path.

W&B keeps the last second or so of a run in memory, so a `kill -9` can lose rows that were
logged. Each row is therefore also appended to a journal in the workdir when it is logged;
a resumed run compares the journal with what W&B's files hold and logs again what they lost
(restore_history), and never logs a step they already hold.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import netrc
import os
import re
import secrets
import string
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genjax import images as pictures
from genjax.images import Scatter

DEFAULT_HOST = "api.wandb.ai"
# Logged steps that may wait for the worker thread; one more waits for the oldest. Bounds
# the host memory that pictures waiting to be logged can hold.
MAX_PENDING_LOGS = 64


def _wandb():
    """wandb, imported when a run starts: it takes about a second and brings OpenTelemetry,
    which commands that never log (the benchmark) do without."""
    import wandb

    return wandb


def _notice(message: str) -> None:
    print(f"[wandb] {message}", file=sys.stderr, flush=True)


def api_key() -> str:
    """The key `wandb login` or WANDB_API_KEY gave this machine for the W&B host, or "".

    Read from the environment and ~/.netrc with the standard library, not wandb's private
    auth modules, which change between releases.
    """
    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    host = os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)
    host = host.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        auth = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return ""
    return (auth[2] or "") if auth else ""


def api_key_configured() -> bool:
    return bool(api_key())


def choose_mode(requested: str) -> str:
    """auto -> online when a key is configured, else offline (with a one-line notice); online
    without a key -> offline too: W&B would otherwise ask for one at a terminal and wait."""
    if requested not in ("auto", "online"):
        return requested
    if api_key_configured():
        return "online"
    if requested == "online":
        _notice(
            "--wandb_mode=online but no W&B API key is configured: logging offline "
            "(`wandb login` or WANDB_API_KEY to go online)"
        )
    else:
        _notice("no W&B API key configured: logging offline (`wandb login` to go online)")
    return "offline"


class Session:
    """A W&B run under `directory`; the experiment's only handle on W&B."""

    def __init__(
        self,
        *,
        directory: str | os.PathLike,
        config: Mapping[str, Any],
        mode: str = "auto",
        project: str = "genjax",
        entity: str = "",
        name: str = "",
        group: str = "",
        job_type: str = "",
        init_timeout: float = 20.0,
        run_id: str = "",
        journal: str | os.PathLike | None = None,
    ):
        """Starts a run, or resumes run `run_id` (a resumed training run keeps its W&B run).

        journal: a file every logged row is appended to (see the
        module's docstring); restore_history reads it back."""
        # Absolute: W&B's service process resolves a relative dir against its own folder.
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._failed_once = False
        # One worker, so steps reach W&B in the order they were logged (as CLU's
        # AsyncWriter), and rendering pictures never holds up training; summary,
        # mark_preempting and finish wait for it first.
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wandb-log")
        self._pending: list[concurrent.futures.Future] = []
        self.worker_s = 0.0  # Seconds the worker has spent logging.
        self._finished = False
        self._held_elsewhere: set[int] = set()  # Steps earlier processes' W&B files hold.
        mode = choose_mode(mode)
        kwargs = dict(
            dir=str(self.directory),
            config=dict(config),
            project=project or None,
            entity=entity or None,
            name=name or None,
            group=group or None,
            job_type=job_type or None,
            reinit="create_new",
        )
        if run_id:
            kwargs |= dict(id=run_id, resume="allow")
        try:
            self._run = self._init(mode, init_timeout, kwargs)
        except Exception as e:  # Network down, bad key, server error: never fatal.
            if mode != "online":
                raise
            reason = (str(e).strip().splitlines() or [""])[0]
            _notice(
                f"could not start an online run ({type(e).__name__}: {reason}); logging offline"
            )
            mode = "offline"
            try:
                self._run = self._init(mode, init_timeout, kwargs)
            except Exception as again:  # W&B's service still holds the id it failed with.
                if "in use" not in str(again):
                    raise
                kwargs = {k: v for k, v in kwargs.items() if k not in ("id", "resume")}
                self._run = self._init(mode, init_timeout, kwargs)
        self.mode = mode
        self._journal = Journal(journal) if journal is not None and mode != "disabled" else None

    @staticmethod
    def _init(mode: str, init_timeout: float, kwargs: dict[str, Any]):
        settings = _wandb().Settings(
            mode=mode,
            init_timeout=init_timeout,
            # Handed over, so that W&B never looks for a key itself: without one it would
            # ask for it at a terminal and wait there for ever.
            api_key=(api_key() or None) if mode == "online" else None,
            login_timeout=init_timeout,
            # Our progress bar owns the terminal; W&B's console capture would duplicate it.
            console="off",
            silent=True,
            # W&B writes the run's .wandb file every 15 s by default; every second bounds
            # what a kill -9 takes from it before the journal is read back.
            x_transaction_log_flush_interval=1.0,
        )
        return _wandb().init(settings=settings, **kwargs)

    @property
    def id(self) -> str:
        return self._run.id

    @property
    def dir(self) -> str:
        """The run's own folder (holding run-ID.wandb and files/), or "" when disabled."""
        if self.mode == "disabled":
            return ""
        return str(Path(self._run.dir).parent)

    @property
    def url(self) -> str:
        return (self._run.url or "") if self.mode == "online" else ""

    def describe(self) -> dict[str, str]:
        """Where the run is, for summary.json and the final message."""
        info = {"mode": self.mode, "id": self.id, "dir": self.dir}
        if self.url:
            info["url"] = self.url
        if self.mode == "offline":
            # Every folder of a resumed run, in the order its processes wrote them.
            folders = [str(d) for d in find_run_dirs(self.directory, self.id)] or [self.dir]
            info["sync_command"] = "wandb sync " + " ".join(folders)
        return info

    def log(
        self,
        step: int,
        scalars: Mapping[str, float] | None = None,
        images: Mapping[str, np.ndarray | tuple[np.ndarray, str]] | None = None,
        scatters: Mapping[str, Scatter] | None = None,
        tables: Mapping[str, tuple[Sequence[str], Sequence[Sequence[Any]]]] | None = None,
        save_dir: str | os.PathLike | None = None,
    ) -> None:
        """Logs one W&B step: scalars, images (array, (array, caption) or images.Deferred),
        scatter plots and tables ((columns, rows)); each image is also saved as
        save_dir/KEY.png when given. Returns at once, the row in the journal; the worker
        thread renders, saves and logs (flush waits for it). A step that an earlier process
        of this run already gave W&B is rendered and saved but not sent again."""
        if self._finished:  # W&B must never stop training: a late row is dropped.
            return
        scalars = {k: _plain(v) for k, v in (scalars or {}).items()}
        if self._journal is not None:
            captions = {k: (_as_tuple(v) + (None,))[1] for k, v in (images or {}).items()}
            self._journal.append({"step": step, "scalars": scalars, "images": captions})
        self._pending = [f for f in self._pending if not f.done()]
        if len(self._pending) >= MAX_PENDING_LOGS:
            self._pending.pop(0).result()
        send = step not in self._held_elsewhere
        row = (step, scalars, images, scatters, tables, save_dir, send)
        self._pending.append(self._worker.submit(self._log_now, *row))

    def restore_history(self, logged_through: int) -> int:
        """Makes W&B hold each journaled step up to `logged_through` exactly once: steps the
        earlier processes' W&B runs lost are logged again (their scalars, and their
        pictures where W&B had kept the files); later journal rows are dropped, since
        training makes them again. Returns how many rows were logged again.

        What W&B holds: offline, the steps in the earlier processes' .wandb logs; online,
        the steps before the server's next one (a row can be in the local log and never
        have reached the server)."""
        if self._journal is None:
            return 0
        kept = [r for r in read_journal(self._journal.path) if r["step"] <= logged_through]
        earlier = [
            h
            for h in map(read_history, find_run_dirs(self.directory, self.id))
            if h["run_id"] == self.id and h["dir"].resolve() != Path(self.dir).resolve()
        ]
        if self.mode == "online":
            self._held_elsewhere = set(range(self._run.starting_step))
        else:
            self._held_elsewhere = set().union(*(h["steps"] for h in earlier))
        self._journal.rewrite(kept)
        missing = [r for r in kept if r["step"] not in self._held_elsewhere]
        for r in missing:
            found = {}
            for key, caption in r["images"].items():
                # W&B names its copy of a picture after the first 20 hex digits of its sha256.
                digest = r["media"].get(key, "")[:20]
                files = [
                    f
                    for h in earlier
                    for f in (h["dir"] / "files" / "media").rglob(f"*_{digest}.png")
                    if digest
                ]
                if files:
                    found[key] = (files[0], caption) if caption else files[0]
            row = (r["step"], dict(r["scalars"]), found, None, None, None, True)
            self._pending.append(self._worker.submit(self._log_now, *row))
        return len(missing)

    def flush(self) -> None:
        """Waits until every step logged so far has reached W&B (or failed, and said so)."""
        for future in self._pending:
            future.result()
        self._pending = []

    def _log_now(self, step, scalars, images, scatters, tables, save_dir, send) -> None:
        if (self.mode == "disabled" or not send) and save_dir is None:
            return  # Nowhere to put anything (another host's process): render nothing.
        start = time.perf_counter()
        resolved, digests = {}, {}
        for key, value in (images or {}).items():
            # A picture that fails (a plotting error, a full disk) is left out alone: the
            # step's numbers and its other pictures are still logged.
            try:
                resolved[key] = pictures.resolve(value)
                if save_dir is not None:  # The latest of each picture, beside checkpoints.
                    array, *caption = _as_tuple(resolved[key])
                    path = Path(save_dir) / f"{key}.png"
                    pictures.save_png(array, path)
                    digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
                    # W&B takes the file as it is, so the PNG is encoded once; W&B copies it
                    # before the next row rewrites it.
                    resolved[key] = (path, *caption)
            except Exception as e:
                self._report_failure(e, f"picture {key!r} at step {step}")
        if self._journal is not None and digests:  # How restore_history finds W&B's copies.
            self._journal.append({"step": step, "media": digests})
        try:
            if self.mode != "disabled" and send:  # Disabled: W&B's objects would go nowhere.
                self._build_and_log(step, scalars, resolved, scatters, tables)
        finally:
            self.worker_s += time.perf_counter() - start

    def _report_failure(self, e: Exception, what: str = "logging") -> None:
        if what != "logging":  # Each failing picture is named; rows fail once, quietly after.
            _notice(f"{what} failed ({type(e).__name__}: {e}); training continues")
        elif not self._failed_once:
            _notice(f"logging failed ({type(e).__name__}: {e}); training continues")
            self._failed_once = True

    def _build_and_log(self, step, scalars, images, scatters, tables) -> None:
        payload: dict[str, Any] = scalars
        try:
            for key, (columns, rows) in (tables or {}).items():
                payload[key] = _wandb().Table(columns=list(columns), data=[list(r) for r in rows])
            for key, value in (images or {}).items():
                picture, caption = (*_as_tuple(value), None)[:2]
                picture = str(picture) if isinstance(picture, Path) else np.asarray(picture)
                payload[key] = _wandb().Image(picture, caption=caption)
            for key, sc in (scatters or {}).items():
                table = _wandb().Table(
                    columns=["x", "y", "label"],
                    data=[
                        [float(x), float(y), str(lab)]
                        for (x, y), lab in zip(sc.xy, sc.labels, strict=True)
                    ],
                    # Declared column types: W&B then checks each row against them instead
                    # of inferring optional types row by row.
                    dtype=[float, float, str],
                    optional=False,
                )
                payload[key] = _wandb().plot.scatter(table, "x", "y", title=sc.title)
            # Committed now: W&B otherwise keeps a row open until the next step or finish().
            self._run.log(payload, step=step, commit=True)
        except Exception as e:  # A logging failure must not end a training run.
            self._report_failure(e)

    def mark_preempting(self) -> None:
        """Tells W&B the run was stopped by a signal and will be resumed."""
        self.flush()
        try:
            self._run.mark_preempting()
        except Exception:  # Not supported in every mode; never fatal.
            pass

    def summary(self, values: Mapping[str, Any]) -> None:
        self.flush()
        try:
            for key, value in values.items():
                self._run.summary[key] = value
        except Exception as e:  # Never let W&B hide the real outcome of a run.
            _notice(f"could not write the run summary ({type(e).__name__}: {e})")

    def finish(self, exit_code: int = 0) -> None:
        self.flush()
        self._finished = True
        self._worker.shutdown()
        if self._journal is not None:
            self._journal.close()
        try:
            self._run.finish(exit_code=exit_code)
        except Exception as e:
            _notice(f"could not finish the run cleanly ({type(e).__name__}: {e})")


def _as_tuple(picture) -> tuple:
    """An array, path or (picture, caption) as (picture, [caption])."""
    return picture if isinstance(picture, tuple) else (picture,)


def _plain(value: Any) -> Any:
    """A numpy or JAX scalar as the Python number it holds (JSON and W&B take those)."""
    return value.item() if hasattr(value, "item") and np.ndim(value) == 0 else value


class Journal:
    """The rows a run logged, one JSON line each, appended as they are logged: the scalars
    and captions by the training loop, the pictures' digests by the worker once saved."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()  # The loop and the worker both append.
        self.failed = False
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def append(self, line: Mapping[str, Any]) -> None:
        try:
            with self._lock:
                self._file.write(json.dumps(line, default=str) + "\n")
                self._file.flush()  # In the OS's hands: a kill -9 of this process keeps it.
        except OSError as e:  # A full disk: training goes on, the checkpoint save says so.
            if not self.failed:
                _notice(f"could not write the row journal {self.path} ({e.strerror or e})")
            self.failed = True

    def rewrite(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Replaces the journal with `rows` (atomically: a kill leaves the old or the new)."""
        with self._lock:
            self._file.close()
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            tmp.replace(self.path)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_journal(path: str | os.PathLike) -> list[dict[str, Any]]:
    """A journal's rows by step: {"step", "scalars", "images": {key: caption}, "media": {key:
    sha256}}. A line cut short by a kill is skipped; a row logged again replaces the old."""
    rows: dict[int, dict[str, Any]] = {}
    if Path(path).exists():
        for text in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                line = json.loads(text)
            except ValueError:
                continue
            step = line["step"]
            if "scalars" in line:
                rows[step] = {"media": {}, **line}
            elif step in rows:
                rows[step]["media"].update(line.get("media", {}))
    return [rows[s] for s in sorted(rows)]


# A run folder's name: [offline-]run-DATE_TIME-ID, and -N when one second saw several.
_RUN_DIR = re.compile(r"(?:offline-)?run-(\d{8}_\d{6})-([a-z0-9]+)(?:-(\d+))?")


def find_run_dirs(directory: str | os.PathLike, run_id: str = "") -> list[Path]:
    """Offline and online run folders under a W&B `dir` (its wandb/ subfolder), oldest first;
    those of one run when `run_id` is given."""
    found = []
    for p in (Path(directory) / "wandb").glob("*run-*"):
        match = _RUN_DIR.fullmatch(p.name)
        if match and (not run_id or match[2] == run_id) and not p.is_symlink():
            if p.is_dir() and list(p.glob("run-*.wandb")):
                found.append((match[1], int(match[3] or 0), p))
    return [p for *_, p in sorted(found)]  # By start time, then W&B's suffix.


def _inspect(run_dir: str | os.PathLike, *flags: str) -> str:
    """`wandb leet inspect --json`: wandb's own reader of a run's .wandb log, so it sees what
    W&B would upload."""
    exe = Path(sys.executable).with_name("wandb")
    command = [str(exe) if exe.exists() else "wandb", "leet", "inspect", "--json", *flags]
    return subprocess.run(
        [*command, str(run_dir)], capture_output=True, text=True, check=True, timeout=120
    ).stdout


def new_run_id() -> str:
    """A W&B run id (8 lowercase letters and digits, as W&B's own), chosen before the run
    starts so that the workdir can record it first."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def read_history(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What one run folder's .wandb log holds: its run id, the steps of its history rows,
    and its exit code (None when the process never finished the run)."""
    run_dir = Path(run_dir)
    # The id is also in the folder's name, for a log cut short before its run record.
    match = _RUN_DIR.fullmatch(run_dir.name)
    out = {"dir": run_dir, "run_id": match[2] if match else "", "steps": set()}
    out["exit_code"] = None
    try:
        records = _inspect(run_dir)
    except subprocess.CalledProcessError:  # A log W&B never got to write (a failed start).
        return out
    except (OSError, subprocess.TimeoutExpired) as e:
        _notice(f"could not read {run_dir} back ({type(e).__name__}); counted as empty")
        return out
    for line in records.splitlines():
        record = json.loads(line)
        kind = record.get("type")
        if kind == "run":
            out["run_id"] = record["run"].get("run_id", out["run_id"])
        elif kind == "history":
            out["steps"].add(int(record["history"]["item"]["_step"]))
        elif kind == "exit":
            out["exit_code"] = int(record["exit"].get("exit_code", 0))
    return out


def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads a run's .wandb log back: config, history rows, summary, state and custom charts."""
    records = _inspect(run_dir)
    summary = _inspect(run_dir, "--summary")
    history, charts, run_id, names = [], {}, "", {}
    for line in records.splitlines():
        record = json.loads(line)
        if record.get("type") == "run":
            # The run record is written at start, so a killed run still has its id.
            run_id = record["run"].get("run_id", run_id)
            names = {k: record["run"].get(k, "") for k in ("display_name", "run_group", "job_type")}
        elif record.get("type") == "history":
            history.append(dict(record["history"]["item"]))
        elif record.get("type") == "config":
            for key, value in record["config"].get("update", {}).items():
                if key.startswith("_wandb.visualize."):
                    charts[key.removeprefix("_wandb.visualize.")] = value["panel_config"]
    overview = json.loads(summary)
    return {
        "config": overview.get("config", {}),
        "summary": overview.get("summary", {}),
        "state": overview.get("state"),
        "run_id": overview.get("run_id") or run_id,
        "history": history,
        "charts": charts,  # wandb.plot.* panels by key, e.g. a scatter's fields and title.
        "name": names.get("display_name", ""),
        "group": names.get("run_group", ""),
        "job_type": names.get("job_type", ""),
    }


def agent_run() -> tuple[str, str] | None:
    """(sweep id, run id) when `wandb agent` started this process for a sweep trial.

    The agent passes them in the environment; wandb.init picks them up by itself.
    """
    sweep_id, run_id = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
    return (sweep_id, run_id) if sweep_id and run_id else None
