"""A draft model is memory like any model: checked against what is free before it first loads
into its target's runner, and counted with the target afterwards."""

from __future__ import annotations

import httpx

from mlxserve.models import memory
from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma

CONTEXT = 256


def test_a_draft_is_counted_when_it_fits_and_refused_naming_draft_model_when_not(tmp_path):
    base = make_tiny_gemma(tmp_path / "test" / "base")
    small = make_tiny_gemma(tmp_path / "test" / "small-draft", seed=1)
    large = make_tiny_gemma(tmp_path / "test" / "large-draft", seed=2, head_dim=64)
    needs = {r.id: memory.estimate_memory(r, 0).total_bytes for r in (small, large)}
    assert needs[large.id] > needs[small.id]
    # Room for the base and the small draft, not for the large one as well.
    limit = memory.estimate_memory(base, CONTEXT).total_bytes + needs[small.id]
    limit += (needs[large.id] - needs[small.id]) // 2
    env = {memory.MEMORY_LIMIT_ENV: str(limit)}
    args = ["--context-length", str(CONTEXT), "--draft-models", f"{small.id},{large.id}"]
    with ServerProcess(tmp_path, model=base.id, engine="mlx", extra_args=args, env=env) as server:

        def complete(draft: str) -> httpx.Response:
            body = {"model": base.id, "prompt": "w5 w6 w7", "max_tokens": 3, "draft_model": draft}
            return httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=60)

        def counted() -> int:
            loaded = httpx.get(f"{server.base_url}/api/v0/loaded", timeout=30).json()["data"]
            return loaded[0]["memory_bytes"]

        before = counted()
        assert complete(small.id).status_code == 200
        after_small = counted()
        assert complete(small.id).status_code == 200
        assert counted() == after_small  # once, however many requests name it
        refused = complete(large.id)
        after_large = counted()
    assert after_small - before >= small.size_bytes  # its weights at least
    assert refused.status_code == 507, refused.text
    assert refused.json()["error"]["param"] == "draft_model"
    assert after_large == after_small
