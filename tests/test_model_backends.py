"""contrastive/model.py: thread settings and the ONNX backends (their config errors; a slow export check)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from contrastive.errors import ConfigError, ModelError
from contrastive.model import cpu_threads, load_model


def test_cpu_threads_settings():
    assert cpu_threads(None) is None
    assert cpu_threads(3) == 3
    assert cpu_threads("auto", cores=2, idle=2.0) == 2
    assert cpu_threads("auto", cores=2, idle=1.8) == 2
    assert cpu_threads("auto", cores=2, idle=1.5) == 1  # another process holds half a core: one thread
    assert cpu_threads("auto", cores=2, idle=0.9) == 1
    assert cpu_threads("auto", cores=2, idle=0.0) == 1  # never zero
    assert cpu_threads("auto", cores=4, idle=9.0) == 4  # never more than the cores
    assert 1 <= cpu_threads("auto") <= (os.cpu_count() or 1)
    for bad in (0, -1, "many", 1.5, True):
        with pytest.raises(ConfigError, match="batch.num_threads"):
            cpu_threads(bad, field="batch.num_threads")


def test_load_model_rejects_unknown_backends_and_onnx_without_a_cache_dir():
    with pytest.raises(ModelError, match="model.backend"):
        load_model("all-MiniLM-L6-v2", backend="tensorrt")
    with pytest.raises(ModelError, match="onnx_cache_dir"):
        load_model("all-MiniLM-L6-v2", backend="onnx")


@pytest.mark.slow
def test_onnx_backends_match_torch_and_export_into_the_cache_dir(tmp_path):
    """fp32 ONNX reproduces the torch embeddings; dynamic int8 stays close; files land in the cache dir only."""
    pytest.importorskip("onnxruntime")
    from contrastive.model import encode, fingerprint, resolve_model

    texts = [
        "How do I learn Python?",
        "What is the best way to learn Python quickly?",
        "Why is the sky blue?",
        "a " * 300,
    ]
    packaged = sorted(p.name for p in Path(resolve_model("all-MiniLM-L6-v2")).rglob("*"))
    reference = encode(load_model("all-MiniLM-L6-v2", 128), texts, 2, show_progress=False)
    for backend, floor in (("onnx", 0.9999), ("onnx-int8", 0.97)):
        model = load_model("all-MiniLM-L6-v2", 128, backend=backend, cache_dir=tmp_path)
        emb = encode(model, texts, 2, show_progress=False)
        assert emb.shape == reference.shape
        assert (emb * reference).sum(axis=1).min() > floor
    exported = sorted(p.name for p in (tmp_path / fingerprint("all-MiniLM-L6-v2")).iterdir())
    assert exported == ["model.onnx", "model_int8_per_channel.onnx"]
    assert sorted(p.name for p in Path(resolve_model("all-MiniLM-L6-v2")).rglob("*")) == packaged
