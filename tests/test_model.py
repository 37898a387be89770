"""model.py: resolving names (the packaged, sha-checked MiniLM offline), fingerprints, one real load, encode."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from contrastive.errors import ModelError
from contrastive.model import (
    DEFAULT_MODEL_ID,
    PACKAGED_SHA256,
    encode,
    fingerprint,
    load_model,
    packaged_model_dir,
    resolve_model,
    sha256_file,
    weights_file,
    weights_sha256,
)


def test_default_id_and_alias_resolve_to_the_checked_packaged_dir():
    directory = packaged_model_dir()
    assert (directory / "model.safetensors").is_file()
    assert (directory / "modules.json").is_file()
    assert weights_sha256(directory / "model.safetensors") == PACKAGED_SHA256
    assert resolve_model(DEFAULT_MODEL_ID) == str(directory)
    assert resolve_model("all-MiniLM-L6-v2") == str(directory)


def test_mismatching_sha_refuses_the_weights():
    with pytest.raises(ModelError) as err:
        packaged_model_dir(expected_sha256="0" * 64)
    message = str(err.value)
    assert message.startswith("model.name_or_path: packaged weights")
    assert f"have sha256 {PACKAGED_SHA256}" in message
    assert f"expected {'0' * 64}; refusing to use them" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["/nonexistent/model", "./no-such-model", "~/no/such/model", "a/b/c"])
def test_nonexistent_path_is_a_one_line_model_error(name):
    with pytest.raises(ModelError) as err:
        resolve_model(name)
    assert str(err.value) == f"model.name_or_path: path {name} does not exist"


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_name(name):
    with pytest.raises(ModelError, match=r"model\.name_or_path: empty value"):
        resolve_model(name)


def test_file_instead_of_directory(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"abc")
    with pytest.raises(ModelError, match=r"model\.name_or_path: .*model\.safetensors is a file"):
        resolve_model(str(weights))


def test_existing_local_dir_resolves_to_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("my-model") == str(tmp_path / "my-model")
    assert resolve_model(str(tmp_path / "my-model")) == str(tmp_path / "my-model")


def test_hub_id_passes_through():
    assert resolve_model("someone/some-model") == "someone/some-model"


def test_fingerprint_of_packaged_model_is_stable():
    assert fingerprint(DEFAULT_MODEL_ID) == fingerprint("all-MiniLM-L6-v2") == PACKAGED_SHA256[:16]


def safetensors_bytes(values: list[float]) -> bytes:
    """A valid .safetensors file holding one float32 tensor `values` (header, then the data)."""
    import json
    import struct

    data = struct.pack(f"<{len(values)}f", *values)
    header = json.dumps({"w": {"dtype": "F32", "shape": [len(values)], "data_offsets": [0, len(data)]}}).encode()
    return len(header).to_bytes(8, "little") + header + data


def test_fingerprint_of_local_dir_follows_its_weights(tmp_path):
    model_dir = tmp_path / "ckpt"
    (model_dir / "0_Transformer").mkdir(parents=True)
    nested = model_dir / "0_Transformer" / "model.safetensors"
    v1, v2 = safetensors_bytes([1.0]), safetensors_bytes([2.0, 3.0])
    nested.write_bytes(v1)
    assert weights_file(model_dir) == nested
    assert fingerprint(str(model_dir)) == hashlib.sha256(v1).hexdigest()[:16]
    top = model_dir / "model.safetensors"
    top.write_bytes(v2)
    assert weights_file(model_dir) == top  # the top-level file wins
    assert fingerprint(str(model_dir)) == hashlib.sha256(v2).hexdigest()[:16]
    assert fingerprint(str(model_dir)) == fingerprint(str(model_dir))


def test_broken_safetensors_are_refused_before_any_work(tmp_path):
    """Seen: a truncated model.safetensors or a corrupt header ended evaluate (and the app) in a traceback."""
    from contrastive.errors import ModelError
    from contrastive.model import resolve_model, safetensors_problem

    good = safetensors_bytes([1.0, 2.0])
    cases = {
        "ok": good,
        "truncated": good[:-3],
        "padded": good + b"\0",
        "tiny": b"abc",
        "huge_header": (10**12).to_bytes(8, "little") + good[8:],
        "not_json": (4).to_bytes(8, "little") + b"{{{{",
        "no_offsets": (9).to_bytes(8, "little") + b'{"w": {}}',
    }
    found = {}
    for name, content in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        found[name] = safetensors_problem(path)
    assert found["ok"] is None
    assert all(found[name] for name in cases if name != "ok"), found
    assert "truncated" in found["truncated"] and "corrupt" in found["huge_header"]
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(good[:-3])
    with pytest.raises(ModelError, match=r"weights .*model.safetensors unreadable \(tensors end at byte"):
        resolve_model(str(ckpt))


def test_weights_sha256_sees_rewritten_files(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"one")
    first = weights_sha256(weights)
    assert first == hashlib.sha256(b"one").hexdigest()
    weights.write_bytes(b"two!")  # memoised on (path, size, mtime): a rewrite is noticed
    assert weights_sha256(weights) == hashlib.sha256(b"two!").hexdigest()


def test_sha256_file_reads_in_chunks(tmp_path):
    blob = os.urandom(10_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)
    assert sha256_file(path, chunk=1024) == hashlib.sha256(blob).hexdigest()


def test_fingerprint_of_hub_id_and_dir_without_weights(tmp_path):
    assert fingerprint("someone/some-model") == fingerprint("someone/some-model")
    assert fingerprint("someone/some-model").startswith("hub-")
    assert fingerprint("someone/some-model") != fingerprint("someone/other-model")
    assert weights_file(tmp_path) is None


def test_loading_a_directory_that_is_no_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError) as err:
        load_model(str(tmp_path))
    message = str(err.value)
    assert message.startswith(f"model.name_or_path: cannot load {str(tmp_path)!r}")
    assert "\n" not in message


def test_load_model_encodes_384_d_unit_vectors(minilm):
    assert minilm.max_seq_length == 128
    texts = ["How do I learn Python?", "What is the best way to learn Python?", "How do I grow tomatoes?"]
    emb = minilm.encode(texts, convert_to_numpy=True)
    assert emb.shape == (3, 384)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2])  # a duplicate is nearer than another topic
    assert Path(resolve_model(DEFAULT_MODEL_ID)).is_dir()


# ---------------------------------------------------------------- encode
def test_encode_restores_order_normalises_and_batches_longest_first():
    from evaluation_helpers import FakeModel

    model = FakeModel()
    texts = ["a", "a much longer question?", "mid length", "xx", "the longest question of them all, by far"]
    emb = encode(model, texts, batch_size=2, show_progress=False)
    assert emb.dtype == np.float32 and emb.shape == (5, 8)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    for row, text in zip(emb, texts):
        vec = model.vector(text)
        assert np.allclose(row, vec / np.linalg.norm(vec), atol=1e-6)
    lengths = [max(len(t) for t in batch) for batch in model.batches]
    assert lengths == sorted(lengths, reverse=True) and [len(b) for b in model.batches] == [2, 2, 1]
    assert encode(model, [], 4, show_progress=False).shape == (0, 8)


def test_encode_matches_the_model_on_real_text(minilm, fixture_data):
    from contrastive.evaluation import split_questions

    texts = split_questions(fixture_data.splits["val"])["text"].tolist()[:40]
    ours = encode(minilm, texts, batch_size=16, show_progress=False)
    ref = minilm.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    assert np.allclose(ours, ref, atol=1e-4)


class _Tripwire:
    """Unpickling this creates a file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_in_any_module_of_a_checkpoint_is_refused_unread(tmp_path):
    import pickle
    import shutil

    from contrastive.model import load_model, packaged_model_dir

    checkpoint = tmp_path / "ckpt"
    shutil.copytree(packaged_model_dir(), checkpoint)
    marker = tmp_path / "unpickled"
    (checkpoint / "1_Pooling" / "pytorch_model.bin").write_bytes(pickle.dumps(_Tripwire(str(marker))))
    with pytest.raises(ModelError, match=r"holds pickle file\(s\) 1_Pooling/pytorch_model.bin: refused") as err:
        load_model(str(checkpoint), device="cpu")
    assert "\n" not in str(err.value)
    assert not marker.exists()
    (checkpoint / "1_Pooling" / "pytorch_model.bin").unlink()
    assert load_model(str(checkpoint), device="cpu").get_embedding_dimension() == 384
