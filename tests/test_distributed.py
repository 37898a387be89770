"""Multi-process training (contrastive/distributed.py): gathered in-batch negatives make each anchor meet the
GLOBAL batch (checked against one process on the same batch), and `torchrun --nproc_per_node 2` on CPU / gloo
trains the fixture with one MLflow run, one checkpoint and rank 0 alone evaluating."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import train_settings

ANCHORS = ["How do I learn Python?", "Is coffee bad for you?", "What is a black hole?", "How to cook rice?"]
POSITIVES = ["Best way to learn Python?", "Is coffee unhealthy?", "What are black holes?", "How do I cook rice?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mnrl_value(anchors: list[str], positives: list[str], *overrides: str) -> float:
    """The configured MNRL loss (contrastive.losses.mnrl) on one batch, model in eval mode (no dropout)."""
    from contrastive.losses import mnrl
    from contrastive.model import load_model

    settings = train_settings("loss.scale=1.0", *overrides)  # scale 1: every negative counts (no ~0 loss)
    model = load_model(settings.model.name_or_path, settings.model.max_seq_length, "cpu").eval()
    loss = mnrl(model, settings.loss)
    features = [model.preprocess(anchors), model.preprocess(positives)]
    return float(loss(features, labels=None).detach())


def _rank(rank: int, port: int, out: str, overrides: tuple[str, ...]) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    half = slice(2 * rank, 2 * rank + 2)
    value = mnrl_value(ANCHORS[half], POSITIVES[half], *overrides)
    Path(out, f"rank{rank}.json").write_text(json.dumps(value))
    dist.destroy_process_group()


def two_ranks(tmp_path: Path, *overrides: str) -> float:
    """The mean of two gloo ranks' losses, each on its half of the batch."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    torch.multiprocessing.start_processes(
        _rank, args=(free_port(), str(tmp_path), overrides), nprocs=2, start_method="spawn"
    )
    return sum(json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)) / 2


def test_gathered_negatives_make_each_anchor_meet_the_global_batch(tmp_path):
    """Two processes with half the batch each, `loss.gather_across_devices` left at null (true under DDP): the
    mean loss equals one process's loss on the whole batch. Without gathering, each anchor meets only its own
    device's half (fewer negatives: a different, lower loss)."""
    whole = mnrl_value(ANCHORS, POSITIVES)
    assert two_ranks(tmp_path / "gathered") == pytest.approx(whole, rel=1e-4)
    alone = two_ranks(tmp_path / "alone", "loss.gather_across_devices=false")
    assert whole > 0.5 and alone < whole - 0.1


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_once_and_only_rank_0_reports(tmp_path):
    run_dir = tmp_path / "run"
    store = tmp_path / "mlruns.db"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        "-m",
        "contrastive.train",
        "data=fixture",
        "trainer.device=cpu",
        "trainer.max_steps=2",
        "batch.size=8",
        "eval.n_boot=50",
        "eval.umap.enabled=false",
        "tracking.log_model=false",
        f"hydra.run.dir={run_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"tracking.tracking_uri=sqlite:///{store}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 2 and (run_dir / "model" / "model.safetensors").is_file()
    assert done.stdout.count("output dir:") == 1  # rank 0 alone evaluated and reported

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("contrastive").experiment_id])
    assert len(runs) == 1 and runs[0].data.params["world_size"] == "2"


def test_examples_seen_count_every_process_and_only_rank_0_evaluates(monkeypatch):
    from types import SimpleNamespace

    from contrastive.training import objective_callback

    settings = train_settings("batch.size=8", "trainer.eval_steps=2", "trainer.eval_every_examples=0")
    state = SimpleNamespace(global_step=2, max_steps=10, num_train_epochs=1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    main = objective_callback(lambda: 0.5, settings, None, log_to_mlflow=False)
    main.on_step_end(None, state, None)
    assert main.history == [(2 * 8 * 2, 0.5)]  # step 2 x batch 8 x 2 processes
    monkeypatch.setenv("RANK", "1")
    replica = objective_callback(lambda: pytest.fail("rank 1 evaluated"), settings, None, log_to_mlflow=False)
    replica.on_step_end(None, state, None)
    assert replica.history == []


def test_multi_process_training_refuses_alternating_losses_and_sweep_trials(monkeypatch):
    from omegaconf import OmegaConf

    from contrastive.errors import ConfigError
    from contrastive.train import check_processes

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = OmegaConf.create({})
    with pytest.raises(ConfigError, match=r"loss.combine=alternate: under 2 processes .* use loss.combine=joint"):
        check_processes(train_settings("loss.combine=alternate", "loss.aux_weight=0.3"), cfg)
    check_processes(train_settings("loss.combine=joint", "loss.aux_weight=0.3"), cfg)
    trial = OmegaConf.create({"optuna": {"trial_number": 3}})
    with pytest.raises(ConfigError, match=r"WORLD_SIZE=2: a sweep trial runs in one process"):
        check_processes(train_settings(), trial)
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_processes(train_settings("loss.combine=alternate", "loss.aux_weight=0.3"), trial)
