"""The MLX engine's batch is bounded by the KV tokens memory holds, not a fixed number of
sequences, against the real server: with memory for the model and one context beside its prompt
cache, requests that each may fill half the context decode one at a time; with memory to spare,
together."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mlxserve.engine.base import PROMPT_CACHE_BYTES
from mlxserve.models import memory
from tests.metrics import model_metric
from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma

CONTEXT = 256
REQUESTS = 3
REPLY = CONTEXT // 2 + 8  # with its prompt, more than half the context: two never fit in one


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("batch-size")
    return store, make_tiny_gemma(store / "test" / "tiny-gemma")


def most_decoding_together(store, tiny, memory_limit: int) -> int:
    env = {memory.MEMORY_LIMIT_ENV: str(memory_limit)}
    args = ["--context-length", str(CONTEXT)]
    with ServerProcess(store, model=tiny.id, engine="mlx", extra_args=args, env=env) as server:
        body = {"model": tiny.id, "max_tokens": REPLY, "temperature": 0}
        body["logit_bias"] = {"2": -100}  # no EOS: every reply runs its full length

        def complete(n: int) -> int:
            answer = httpx.post(
                f"{server.base_url}/v1/completions", json={**body, "prompt": f"w{n}"}, timeout=120
            )
            assert answer.status_code == 200, answer.text
            return answer.json()["usage"]["completion_tokens"]

        with ThreadPoolExecutor(REQUESTS) as pool:
            assert list(pool.map(complete, range(REQUESTS))) == [REPLY] * REQUESTS
        return model_metric(server.base_url, "mlxserve_engine_most_decoding", tiny.id)


def test_memory_bounds_how_many_sequences_decode_together(tiny_store):
    store, tiny = tiny_store
    fits_one = memory.estimate_memory(tiny, CONTEXT).total_bytes + PROMPT_CACHE_BYTES
    assert most_decoding_together(store, tiny, fits_one) == 1
    assert most_decoding_together(store, tiny, fits_one + 64 * 1024**3) == REQUESTS
