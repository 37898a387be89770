"""Issue 30's fault suite: broken files, unreachable servers and hostile values each get one `error:` line and exit 2
before any work (no traceback, no hang, no password shown), and a collapsed sweep promotes nothing.

Each case runs the real entry point in a subprocess on fixture-sized inputs, with every output in tmp_path. The
PostgreSQL cases use the server `.ci/cluster up` starts (CONTRASTIVE_TEST_PG_URL) and are skipped without it.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from conftest import run_module

pytestmark = pytest.mark.slow

MODULES = {"train": "contrastive.train", "evaluate": "contrastive.evaluate", "app": "contrastive.app"}


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broken_checkpoint(folder: Path, kind: str) -> Path:
    """A SentenceTransformer-shaped directory whose model.safetensors is truncated or has a corrupt header."""
    folder.mkdir(parents=True)
    (folder / "modules.json").write_text("[]")
    (folder / "config.json").write_text("{}")
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    whole = len(header).to_bytes(8, "little") + header + b"\0" * 16
    weights = whole[: len(whole) - 7] if kind == "truncated" else (10**12).to_bytes(8, "little") + whole[8:]
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def _pg_url_with(password: str) -> str | None:
    from sqlalchemy.engine import make_url

    url = os.environ.get("CONTRASTIVE_TEST_PG_URL")
    return make_url(url).set(password=password).render_as_string(hide_password=False) if url else None


# (entry point, overrides, what the one line must say); {tmp}, {ckpt_truncated}, {ckpt_header} and {port} are
# filled per test. Every case is one seen in issue 30 (its "Seen" points 2, 3 and 6) or a neighbour of one.
BATTERY = [
    ("train", ["loss.aux_weight=1e39"], "loss.aux_weight=1e+39: must be >= 0 and finite; beyond float32"),
    ("train", ["loss.scale=1e39"], "loss.scale=1e+39"),
    ("train", ["trainer.lr=3.5e38"], "trainer.lr=3.5e+38"),
    ("train", ["eval.collapse_drop=1e300"], "eval.collapse_drop=1e+300"),
    ("train", ["paths.output_root=/proc/x/out"], "paths.output_root='/proc/x/out': cannot write there"),
    ("train", ["hydra.run.dir=/proc/x/run"], "hydra.run.dir='/proc/x/run': cannot write there"),
    ("train", ["-m", "trainer.lr=1e-5,2e-5", "paths.output_root=/proc/x/out"], "paths.output_root='/proc/x/out'"),
    ("train", ["tracking.tracking_uri=http://127.0.0.1:{port}"], "tracking.tracking_uri='http://127.0.0.1:{port}'"),
    ("train", ["tracking.tracking_uri=http://u:SECRET@127.0.0.1:{port}"], "'http://u:***@127.0.0.1:{port}'"),
    ("train", ["tracking.probe_timeout_s=0"], "tracking.probe_timeout_s=0"),
    (
        "train",
        ["-m", "+sweeps=fixture_tiny", "hydra.sweeper.storage=sqlite:////proc/x/optuna.db"],
        "hydra.sweeper.storage='sqlite:////proc/x/optuna.db': its directory /proc/x cannot be created",
    ),
    (
        "train",
        ["-m", "+sweeps=fixture_tiny", "hydra.sweeper.storage=postgresql://nobody:SECRET@127.0.0.1:{port}/optuna"],
        "hydra.sweeper.storage='postgresql://nobody:***@127.0.0.1:{port}/optuna': cannot open it",
    ),
    (
        "train",
        ["-m", "+sweeps=fixture_tiny", "hydra.sweeper.storage=postgresql://:SECRET@127.0.0.1:{port}/optuna"],
        "hydra.sweeper.storage='postgresql://:***@127.0.0.1:{port}/optuna': cannot open it",
    ),
    ("train", ["data.columns.question2=question1"], "both name column 'question1'"),
    ("evaluate", ["checkpoint={ckpt_truncated}"], "unreadable (tensors end at byte"),
    ("evaluate", ["checkpoint={ckpt_header}"], "unreadable (header of 1,000,000,000,000 bytes"),
    ("evaluate", ["checkpoint={ckpt_truncated}", "model.backend=onnx-int8"], "unreadable"),
    ("evaluate", ["checkpoint=all-MiniLM-L6-v2", "json={tmp}"], "json='{tmp}': is a directory"),
    ("evaluate", ["checkpoint=all-MiniLM-L6-v2", "paths.output_root=/proc/x"], "paths.output_root='/proc/x'"),
    ("app", ["checkpoint={ckpt_truncated}", "app.port=0"], "unreadable"),
    ("app", ["checkpoint={ckpt_header}", "model.backend=torch", "app.port=0"], "unreadable"),
    ("app", ["app.limits.max_request_mb=1"], "app.limits.max_request_mb=1.0: must be >= app.limits.max_upload_mb"),
    ("app", ["app.limits.max_request_mb=1e39"], "app.limits.max_request_mb=1e+39"),
]


@pytest.mark.parametrize(("entry", "overrides", "expected"), BATTERY, ids=[" ".join(b[1])[:60] for b in BATTERY])
def test_bad_input_is_one_line_and_exit_2(tmp_path, entry, overrides, expected):
    port = closed_port()
    fill = {
        "tmp": str(tmp_path),
        "port": port,
        "ckpt_truncated": broken_checkpoint(tmp_path / "truncated", "truncated"),
        "ckpt_header": broken_checkpoint(tmp_path / "header", "header"),
    }
    args = [a.format(**fill) for a in overrides]
    base = [f"paths.output_root={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'cache'}", "data=fixture"]
    if entry == "train":
        base.append(f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}")
    flags = [a for a in args if a == "-m"]  # Hydra's flags before the overrides
    done = run_module(MODULES[entry], *flags, *base, *[a for a in args if a != "-m"], timeout=180)
    text = done.stdout + done.stderr
    assert done.returncode == 2, text[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected.format(**fill) in errors[0], text[-3000:]
    assert "Traceback" not in text and "SECRET" not in text
    assert not any(line.startswith("serving:") for line in done.stdout.splitlines())  # nothing served, nothing trained
    for path in (tmp_path / "out").rglob("*"):  # multirun.yaml and the rest: the password in no file (Seen 5)
        assert not path.is_file() or b"SECRET" not in path.read_bytes(), path


def test_a_diverged_single_run_is_one_line_and_exit_2(capsys):
    """Seen: a loss that went non-finite ended a single run with a TrainingDiverged traceback."""
    from contrastive.cli import user_errors
    from contrastive.errors import TrainingDiverged

    with pytest.raises(SystemExit) as stopped, user_errors():
        raise TrainingDiverged("loss mnrl became inf (non-finite); lower trainer.lr?")
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: loss mnrl became inf (non-finite); lower trainer.lr?\n"


@pytest.mark.parametrize("password", ["wrong", ""])
def test_a_wrong_password_on_the_real_postgresql_storage_is_one_line(tmp_path, password):
    url = _pg_url_with(password or "x'y z@w")
    if url is None:
        if os.environ.get("CI"):
            pytest.fail("CI runs the cluster tests: .ci/run must start .ci/cluster and export its env")
        pytest.skip("no PostgreSQL server: bash .ci/cluster up DIR && source DIR/env")
    done = run_module(
        "contrastive.train",
        "-m",
        "+sweeps=fixture_tiny",
        f"paths.output_root={tmp_path / 'out'}",
        f"hydra.sweeper.storage={url}",
        timeout=120,
    )
    text = done.stdout + done.stderr
    assert done.returncode == 2, text[-3000:]
    assert "hydra.sweeper.storage=" in text and "cannot open it" in text and "Traceback" not in text
    assert (password or "x'y z@w") not in text


def test_evaluating_the_train_split_warns_that_it_scores_seen_pairs(tmp_path):
    ckpt = broken_checkpoint(tmp_path / "ckpt", "truncated")  # the warning comes first, before any work
    done = run_module(
        "contrastive.evaluate",
        "data=fixture",
        f"checkpoint={ckpt}",
        "eval.split=train",
        f"paths.output_root={tmp_path}",
    )
    assert "warning: eval.split=train scores the pairs a checkpoint trained on this data has seen" in done.stderr
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_a_sweep_whose_only_trial_collapsed_promotes_and_registers_nothing(tmp_path):
    """Seen: `trainer.lr` at 1000 finished COMPLETE far below the baseline, was promoted to best/ and became the
    registry's @best. Now the trial is COMPLETE but flagged, nothing is promoted or registered, and the summary
    and the parent run say why."""
    from mlflow.tracking import MlflowClient

    done = run_module(
        "contrastive.train",
        "-m",
        "+sweeps=fixture_tiny",
        f"paths.output_root={tmp_path}",
        "hydra.sweeper.n_trials=1",
        "trainer.lr=1000",
        timeout=560,
    )
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    sweep = tmp_path / "sweeps" / "fixture_tiny"
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["states"] == {"COMPLETE": 1}
    assert summary["promoted_dir"] is None and not (sweep / "best").exists()
    assert summary["promotion"]["unhealthy"]["0"] and "trial 0 not promoted" in summary["promotion"]["why"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'fixture_mlruns.db'}")
    assert not client.search_model_versions("name='contrastive-fixture'")
    experiments = [e.experiment_id for e in client.search_experiments()]
    parent = next(r for r in client.search_runs(experiments) if r.data.tags.get("sweep") == "true")
    assert "trial 0 not promoted" in parent.data.tags["promotion"] and parent.data.tags["unhealthy_trials"] == "0"
    child = next(r for r in client.search_runs([parent.info.experiment_id]) if r.data.tags.get("trial_number") == "0")
    assert child.data.tags["health"] != "ok"


def test_the_server_probe_passes_a_live_mlflow_server_and_refuses_a_dead_one_in_one_line():
    from contrastive import tracking
    from contrastive.errors import ConfigError

    live = os.environ.get("CONTRASTIVE_TEST_MLFLOW_URI")
    if live is None:
        if os.environ.get("CI"):
            pytest.fail("CI runs the cluster tests: .ci/run must start .ci/cluster and export its env")
        pytest.skip("no MLflow server: bash .ci/cluster up DIR && source DIR/env")
    tracking.require_server(live, timeout_s=5)  # answers /health
    dead = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(ConfigError) as err:
        tracking.require_server(dead, timeout_s=2)
    assert str(err.value).startswith(f"tracking.tracking_uri='{dead}': no server answered within 2 s")
