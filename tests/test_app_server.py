"""The app's entry point: its settings (conf/app.yaml through load_app) and the free port it serves on."""

from __future__ import annotations

import re

import pytest
from conftest import compose_config

from contrastive.app.server import free_port
from contrastive.app.settings import load_app
from contrastive.errors import ConfigError


# ---------------------------------------------------------------- config
def _app_settings(*overrides: str):
    return load_app(compose_config("app", *overrides)).app


def test_the_served_checkpoint_is_the_top_level_checkpoint_key():
    from contrastive.cli import compose_config

    cfg = compose_config(["checkpoint=/some/model"], "app")
    assert cfg.checkpoint == "/some/model" and "model" not in cfg.app
    assert compose_config([], "app").checkpoint is None  # null: discover the newest checkpoint


def test_app_config_defaults_are_valid():
    app = _app_settings()
    assert app.host == "127.0.0.1" and app.share is False and app.port == 7860
    assert load_app(compose_config("app")).model.backend == "onnx-int8"  # README Performance, rows 7c-7d


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("port", 70000, "app.port=70000"),
        ("port", -1, "app.port=-1"),
        ("share", "maybe", "app.share: Value 'maybe' is not a valid bool"),
        ("fallback_threshold", 2, "app.fallback_threshold=2.0"),
        ("top_k", 60, "app.top_k=60: must be <= app.max_top_k"),
        ("limits.max_chars", 0, "app.limits.max_chars=0"),
        ("limits.max_upload_mb", 0, "app.limits.max_upload_mb=0.0"),
        ("corpus.splits", [], "app.corpus.splits=[]"),
        ("queue.max_size", 0, "app.queue.max_size=0"),
        ("queue.concurrency", 0, "app.queue.concurrency=0"),
        ("dedup_baseline_max", -1, "app.dedup_baseline_max=-1"),
    ],
)
def test_app_config_rejects(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _app_settings(f"app.{key}={value}")


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_busy_port_is_a_one_line_error_and_port_0_picks_a_free_one():
    import socket

    from contrastive.app.server import check_port

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"app.port={port}: cannot listen on 127.0.0.1:{port} .*app.port=0"):
            check_port("127.0.0.1", port)
    assert check_port("127.0.0.1", 0) > 0 and check_port("127.0.0.1", None) > 0


@pytest.mark.slow
def test_the_app_on_a_busy_port_exits_2_before_loading_anything(tmp_path):
    """`python -m contrastive.app app.port=<busy>`: one `error:` line, exit 2, no URL, no traceback."""
    import socket
    import subprocess
    import sys

    from contrastive import PROJECT_ROOT

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = [sys.executable, "-m", "contrastive.app", f"app.port={port}", "data=fixture"]
        args += [f"hydra.run.dir={tmp_path}", "checkpoint=/nonexistent/never/loaded"]
        proc = subprocess.run(args, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: app.port={port}: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "stop what uses it, or pass app.port=0 for a free port"
    ]
    assert "http://" not in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_sigterm_during_a_dedup_stops_the_app_cleanly(tmp_path):
    """Seen: SIGTERM took > 10 s to end the app while a request ran (uvicorn waited on its stream, which checks for a
    stop every 10 s). The running dedup's progress reaches the client; SIGTERM then ends the app at once with
    `stopped: ...` and 143, no traceback, the port free. How fast is measured by hand (README), not asserted here."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from gradio_client import Client

    from contrastive import PROJECT_ROOT
    from contrastive.app.server import check_port

    port = free_port()
    args = [sys.executable, "-m", "contrastive.app", f"app.port={port}", "data=fixture", "model.backend=torch"]
    args += [f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    args += [f"paths.output_root={tmp_path / 'outputs'}"]  # no checkpoint there: the baseline alone, one model load
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'no-registry.db'}"}
    out, err = open(tmp_path / "out.log", "w+"), open(tmp_path / "err.log", "w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=out, stderr=err, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "err.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        lines = "\n".join(f"How do I learn about subject number {i} quickly and well?" for i in range(3000))
        job = Client(url, verbose=False).submit(lines, None, 0.9, api_name="/dedup")
        while not (job.status().progress_data or job.done()):  # the dedup is encoding, and says how far it is
            assert time.monotonic() < deadline, "no progress from the dedup"
            time.sleep(0.2)
        unit = job.status().progress_data[0]
        assert (unit.desc, unit.unit, unit.length) == ("encoding", "questions", 3000)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM  # a hang guard, not a speed check
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.close(), err.close()
    stderr = (tmp_path / "err.log").read_text()
    assert "stopped: interrupted by SIGTERM" in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert check_port("127.0.0.1", port) == port  # the port is free again: the app can start on it at once
