import functools
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from genjax import images, wandb_logging

ROOT = Path(__file__).resolve().parents[1]


def test_auto_mode_without_a_key_is_offline_with_a_notice(wandb_home, capsys):
    assert not wandb_logging.api_key_configured()
    assert wandb_logging.choose_mode("auto") == "offline"
    assert "no W&B API key configured" in capsys.readouterr().err


def test_auto_mode_with_a_key_is_online(wandb_home, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_logging.choose_mode("auto") == "online"


def test_a_netrc_entry_counts_as_a_key(wandb_home):
    (wandb_home / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40)
    (wandb_home / ".netrc").chmod(0o600)
    assert wandb_logging.api_key_configured()


def test_explicit_modes_are_kept(wandb_home, monkeypatch):
    for mode in ("offline", "disabled"):
        assert wandb_logging.choose_mode(mode) == mode
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_logging.choose_mode("online") == "online"


def test_online_without_a_key_is_offline_before_wandb_starts(wandb_home, capsys):
    """W&B itself would ask for a key at a terminal and wait for ever."""
    assert wandb_logging.choose_mode("online") == "offline"
    assert "--wandb_mode=online but no W&B API key is configured" in capsys.readouterr().err


def test_unreachable_server_falls_back_to_offline(wandb_home, monkeypatch, tmp_path, capsys):
    # A closed port on loopback: the online start fails, the run goes on offline.
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    run = wandb_logging.Session(directory=tmp_path, config={"a": 1}, mode="online", init_timeout=3)
    assert run.mode == "offline"
    run.log(1, {"train/loss": 0.5})
    run.finish()
    assert "logging offline" in capsys.readouterr().err
    back = wandb_logging.read_run(run.dir)
    assert back["history"][0]["train/loss"] == 0.5


def test_offline_run_reads_back_with_images_and_scatter(wandb_home, tmp_path):
    run = wandb_logging.Session(directory=tmp_path, config={"latent_dim": 2}, mode="offline")
    scatter = images.Scatter(np.array([[0.0, 1.0], [2.0, 3.0]]), ["a", "b"], "t")
    for step in (1, 2):
        run.log(
            step,
            {"train/loss": 1.0 / step},
            images={"grid": (np.zeros((8, 8, 1), np.uint8), "caption")},
            scatters={"latent_space_scatter": scatter},
        )
    run.summary({"val/loss": 0.25})
    run.finish()
    assert run.describe()["sync_command"] == f"wandb sync {run.dir}"
    back = wandb_logging.read_run(run.dir)
    assert back["config"]["latent_dim"] == 2 and back["state"] == "finished"
    assert [h["train/loss"] for h in back["history"]] == [1.0, 0.5]
    assert back["history"][1]["grid._type"] == "image-file"
    assert back["history"][1]["latent_space_scatter_table.nrows"] == 2
    assert back["summary"]["val/loss"] == 0.25
    assert wandb_logging.find_run_dirs(tmp_path) == [tmp_path / "wandb" / run.dir.split("/")[-1]]


def test_pictures_render_and_log_off_the_training_thread_in_order(wandb_home, tmp_path):
    """log() hands rows to one worker thread: Deferred pictures render there, each is also
    saved to save_dir, and every step reaches W&B in order before summary/finish."""
    run = wandb_logging.Session(directory=tmp_path, config={}, mode="offline")
    rendered_on = []
    release = threading.Event()

    def render(value):
        release.wait(timeout=30)  # Held until log() has returned to the training loop.
        rendered_on.append(threading.current_thread().name)
        return np.full((8, 8, 3), value, np.uint8)

    for step in (1, 2, 3):
        deferred = images.Deferred(functools.partial(render, 40 * step))
        run.log(step, {"x": float(step)}, images={"pic": (deferred, "c")}, save_dir=tmp_path)
    assert rendered_on == []  # Returned while the first render was still waiting.
    release.set()
    run.summary({"done": 1.0})  # Waits for the worker.
    assert len(rendered_on) == 3 and all(n.startswith("wandb-log") for n in rendered_on)
    assert np.asarray(Image.open(tmp_path / "pic.png"))[0, 0, 0] == 120  # The last step's.
    assert run.worker_s > 0
    run.finish()
    back = wandb_logging.read_run(run.dir)
    assert [h["x"] for h in back["history"]] == [1.0, 2.0, 3.0]
    assert all(h["pic._type"] == "image-file" for h in back["history"])
    assert back["summary"]["done"] == 1.0
    # Encoded once: W&B holds the very file written to save_dir, not a second encoding, and
    # took each step's copy before the next step rewrote the file.
    media = [Path(run.dir) / "files" / h["pic.path"] for h in back["history"]]
    assert media[2].read_bytes() == (tmp_path / "pic.png").read_bytes()
    assert [np.asarray(Image.open(m))[0, 0, 0] for m in media] == [40, 80, 120]


def test_the_journal_keeps_rows_in_order_and_survives_a_torn_line(tmp_path):
    journal = wandb_logging.Journal(tmp_path / "rows.jsonl")
    journal.append({"step": 1, "scalars": {"x": 1.0}, "images": {"p": "caption"}})
    journal.append({"step": 1, "media": {"p": "ab" * 32}})  # The worker's, once saved.
    journal.append({"step": 2, "scalars": {"x": 2.0}, "images": {}})
    journal.append({"step": 2, "scalars": {"x": 2.5}, "images": {}})  # Logged again.
    journal.close()
    with open(tmp_path / "rows.jsonl", "a") as f:
        f.write('{"step": 3, "scal')  # A kill in the middle of a write.
    rows = wandb_logging.read_journal(tmp_path / "rows.jsonl")
    assert rows == [
        {"step": 1, "scalars": {"x": 1.0}, "images": {"p": "caption"}, "media": {"p": "ab" * 32}},
        {"step": 2, "scalars": {"x": 2.5}, "images": {}, "media": {}},
    ]


def test_a_resumed_run_never_logs_again_a_step_wandb_holds(wandb_home, tmp_path):
    """An earlier process logged steps 1 and 2 (its checkpoint was made after step 1): the
    resumed process redoes step 2, which W&B already holds, then logs 3."""
    first = wandb_logging.Session(
        directory=tmp_path, config={}, mode="offline", journal=tmp_path / "rows.jsonl"
    )
    for step in (1, 2):
        first.log(step, {"x": float(step)})
    first.finish()
    again = wandb_logging.Session(
        directory=tmp_path,
        config={},
        mode="offline",
        run_id=first.id,
        journal=tmp_path / "rows.jsonl",
    )
    assert again.restore_history(logged_through=1) == 0
    assert [r["step"] for r in wandb_logging.read_journal(tmp_path / "rows.jsonl")] == [1]
    again.log(2, {"x": 2.0})
    again.log(3, {"x": 3.0})
    again.finish()
    dirs = wandb_logging.find_run_dirs(tmp_path)
    histories = [wandb_logging.read_run(d)["history"] for d in dirs]
    assert [[h["_step"] for h in history] for history in histories] == [[1, 2], [3]]
    assert [r["step"] for r in wandb_logging.read_journal(tmp_path / "rows.jsonl")] == [1, 2, 3]
    # Uploading it takes both folders, in the order they were written.
    assert again.describe()["sync_command"] == f"wandb sync {dirs[0]} {dirs[1]}"


KILLED_AFTER_LOGGING = """
import os, signal, sys
import numpy as np
from genjax import wandb_logging
run = wandb_logging.Session(directory=sys.argv[1], config={}, mode="offline",
                        journal=os.path.join(sys.argv[1], "rows.jsonl"))
print(run.id, flush=True)
picture = np.full((8, 8, 1), 200, np.uint8)
for step in (1, 2):
    run.log(step, {"x": float(step)}, images={"p": (picture, "a caption")}, save_dir=sys.argv[1])
run.flush()  # Handed to W&B, which writes its log about once a second.
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_rows_wandb_lost_to_a_kill_are_logged_again_with_their_pictures(wandb_home, tmp_path):
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_LOGGING, str(tmp_path)],
        cwd=ROOT,
        # Its own W&B service, as a training process has (not this test process's).
        env={k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr
    run_id = killed.stdout.split()[0]
    (earlier,) = wandb_logging.find_run_dirs(tmp_path)
    lost = {1, 2} - wandb_logging.read_history(earlier)["steps"]
    assert lost, "W&B wrote the rows before the kill: nothing to log again"
    resumed = wandb_logging.Session(
        directory=tmp_path,
        config={},
        mode="offline",
        run_id=run_id,
        journal=tmp_path / "rows.jsonl",
    )
    assert resumed.restore_history(logged_through=2) == len(lost)
    resumed.finish()
    rows = {}
    for d in wandb_logging.find_run_dirs(tmp_path):
        for h in wandb_logging.read_run(d)["history"]:
            assert h["_step"] not in rows, "a step logged twice"
            rows[h["_step"]] = (d, h)
    assert sorted(rows) == [1, 2]
    for step, (d, h) in rows.items():
        assert h["x"] == float(step) and h["p.caption"] == "a caption"
        logged = np.asarray(Image.open(d / "files" / h["p.path"]))
        assert logged.shape[:2] == (8, 8) and int(logged.max()) == 200


def test_a_failing_picture_costs_only_itself_and_finish_waits_for_the_worker(
    wandb_home, tmp_path, capsys
):
    run = wandb_logging.Session(directory=tmp_path, config={}, mode="offline")

    def broken():
        raise RuntimeError("no font")

    good = np.zeros((8, 8, 1), np.uint8)
    bad = images.Deferred(broken)
    run.log(1, {"x": 1.0}, images={"bad": bad, "good": good}, save_dir=tmp_path)
    run.log(2, {"x": 2.0}, images={"good": good}, save_dir=tmp_path)
    run.finish()  # No summary() first: finish itself must wait for both rows.
    run.log(3, {"x": 3.0})  # After finish: dropped, never an error.
    assert "picture 'bad' at step 1 failed (RuntimeError: no font)" in capsys.readouterr().err
    back = wandb_logging.read_run(run.dir)
    assert [h["x"] for h in back["history"]] == [1.0, 2.0]
    assert (
        back["history"][0]["good._type"] == "image-file" and "bad._type" not in back["history"][0]
    )
    assert (tmp_path / "good.png").is_file() and not (tmp_path / "bad.png").exists()


def test_disabled_run_is_a_no_op(wandb_home, tmp_path):
    run = wandb_logging.Session(directory=tmp_path, config={}, mode="disabled")
    run.log(1, {"x": 1.0})
    run.finish()
    assert run.dir == "" and wandb_logging.find_run_dirs(tmp_path) == []


def test_run_folders_are_found_oldest_first_with_wandbs_suffixes(tmp_path):
    """W&B names a second folder of one run in the same second `run-TIME-ID-1`: still that
    run's, after the first; other runs, folders without a log and links are left out."""
    names = [
        "offline-run-20261202_101500-abc123-1",
        "offline-run-20261202_101500-abc123",
        "offline-run-20261202_091500-abc123",
        "run-20261202_111500-other9",
        "offline-run-20261202_121500-abc123-2",
    ]
    for name in names:
        folder = tmp_path / "wandb" / name
        folder.mkdir(parents=True)
        (folder / f"run-{name.split('-')[-1]}.wandb").write_bytes(b"")
    (tmp_path / "wandb" / "offline-run-20261202_131500-abc123").mkdir()  # No log yet.
    (tmp_path / "wandb" / "latest-run").symlink_to(tmp_path / "wandb" / names[0])
    found = [p.name for p in wandb_logging.find_run_dirs(tmp_path, "abc123")]
    assert found == [names[2], names[1], names[0], names[4]]
    assert len(wandb_logging.find_run_dirs(tmp_path)) == 5
