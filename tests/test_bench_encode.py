"""contrastive/bench/encode.py: the plain encode's batches and the model wrapper that records our encode's."""

from __future__ import annotations

import numpy as np

from contrastive.bench.encode import RecordingModel, encode_batches


def test_encode_batches_go_longest_first_and_cover_every_row_once():
    batches = encode_batches([3, 10, 1, 7, 7], batch_size=2)
    assert [list(b) for b in batches] == [[1, 3], [4, 0], [2]]


def test_recording_model_sees_each_batch_of_our_encode():
    class Fake:
        tokenizer = None

        def get_embedding_dimension(self) -> int:
            return 4

        def encode(self, texts, **kwargs):
            return np.ones((len(texts), 4), dtype=np.float32)

    from contrastive.model import encode

    recorder = RecordingModel(Fake())
    out = encode(recorder, ["a", "bbb", "cc", "dddd", "e"], 2, show_progress=False)
    assert out.shape == (5, 4)
    assert [len(c) for c in recorder.calls] == [2, 2, 1]
    assert sorted(t for c in recorder.calls for t in c) == ["a", "bbb", "cc", "dddd", "e"]
    assert recorder.get_embedding_dimension() == 4
