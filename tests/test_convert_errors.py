"""Bad input gives a one-line ConversionError, and a failed or interrupted conversion leaves
nothing in the store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from mlxserve.cli.convert import main as cli_main
from mlxserve.models.convert import ConversionError, convert_model
from mlxserve.models.store import list_models
from tests.gguf_fixtures import (
    TINY_ARCHS,
    Q,
    add_metadata,
    add_tokenizer,
    reference_model,
    write_tiny_gguf,
)


@pytest.fixture
def tiny_gguf(tmp_path) -> Path:
    arch = TINY_ARCHS["llama"]
    _, config, weights = reference_model(arch)
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, arch, weights, config)
    return path


def assert_store_empty(models_dir: Path) -> None:
    leftovers = list(models_dir.rglob("*")) if models_dir.exists() else []
    assert leftovers == [], leftovers


def write_gguf(
    path: Path, arch_name: str, tensors: dict, tokenizer: bool = True, raw_types: dict | None = None
) -> Path:
    arch = TINY_ARCHS["llama"]
    _, config, _ = reference_model(arch)
    writer = GGUFWriter(str(path), arch_name)
    add_metadata(writer, arch, config)
    if tokenizer:
        add_tokenizer(writer, arch)
    for name, data in tensors.items():
        writer.add_tensor(name, data, raw_dtype=(raw_types or {}).get(name))
    for step in (
        writer.write_header_to_file,
        writer.write_kv_data_to_file,
        writer.write_tensors_to_file,
        writer.close,
    ):
        step()
    return path


def convert_error(source: Path, models_dir: Path, **kwargs) -> str:
    with pytest.raises(ConversionError) as caught:
        convert_model(source, models_dir, kwargs.pop("model_id", "t/m"), progress=False, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    assert_store_empty(models_dir / "t")
    return message


def test_not_a_gguf(tmp_path):
    (tmp_path / "notes.gguf").write_text("just some text, not a model\n")
    assert "not a GGUF file" in convert_error(tmp_path / "notes.gguf", tmp_path / "models")


def test_missing_source(tmp_path):
    assert "does not exist" in convert_error(tmp_path / "absent.gguf", tmp_path / "models")


@pytest.mark.parametrize("keep", [0.001, 0.9])
def test_truncated_gguf(tmp_path, tiny_gguf, keep):
    data = tiny_gguf.read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: int(len(data) * keep)])
    assert "truncated GGUF file" in convert_error(truncated, tmp_path / "models")


def test_unsupported_architecture(tmp_path):
    path = write_gguf(
        tmp_path / "bloom.gguf", "bloom", {"token_embd.weight": np.zeros((8, 64), np.float32)}
    )
    message = convert_error(path, tmp_path / "models")
    assert "unsupported architecture 'bloom'" in message and "gemma3" in message


def test_unsupported_tensor_type(tmp_path):
    blocks = np.zeros((8, 2 * 40), np.uint8)  # Q8_1: 40-byte blocks of 32 values
    path = write_gguf(
        tmp_path / "q81.gguf",
        "llama",
        {"token_embd.weight": blocks},
        raw_types={"token_embd.weight": Q.Q8_1},
    )
    assert "unsupported tensor type Q8_1" in convert_error(path, tmp_path / "models")


def test_missing_tokenizer(tmp_path):
    arch = TINY_ARCHS["llama"]
    _, _, weights = reference_model(arch)
    path = write_gguf(
        tmp_path / "notok.gguf",
        "llama",
        {"token_embd.weight": weights["model.embed_tokens.weight"]},
        tokenizer=False,
    )
    assert "missing tokenizer" in convert_error(path, tmp_path / "models")


def test_unknown_tensor_fails_midway_and_cleans_up(tmp_path):
    """The tokenizer is already written to the staging directory when the tensor is met."""
    _, _, weights = reference_model(TINY_ARCHS["llama"])
    extra = write_gguf(
        tmp_path / "extra2.gguf",
        "llama",
        {
            "token_embd.weight": weights["model.embed_tokens.weight"],
            "blk.0.attn_weird.weight": np.ones((4, 64), np.float32),
        },
    )
    assert "blk.0.attn_weird.weight" in convert_error(extra, tmp_path / "models")


@pytest.mark.parametrize(
    "quantize,group_size,expected",
    [
        ("3", 64, "quantize must be one of"),
        ("int4", 64, "quantize must be one of"),
        ("4", 48, "group_size must be one of"),
    ],
)
def test_bad_quantize(tmp_path, tiny_gguf, quantize, group_size, expected):
    message = convert_error(
        tiny_gguf, tmp_path / "models", quantize=quantize, group_size=group_size
    )
    assert expected in message


def test_bad_model_id(tmp_path, tiny_gguf):
    assert "publisher/name" in convert_error(tiny_gguf, tmp_path / "models", model_id="../../etc")


def test_existing_model_needs_overwrite(tmp_path, tiny_gguf):
    models = tmp_path / "models"
    first = convert_model(tiny_gguf, models, "t/m", progress=False)
    marker = Path(first.path) / "config.json"
    before = marker.stat().st_mtime_ns
    with pytest.raises(ConversionError, match="already exists"):
        convert_model(tiny_gguf, models, "t/m", progress=False)
    assert marker.stat().st_mtime_ns == before
    second = convert_model(tiny_gguf, models, "t/m", quantize="8", progress=False, overwrite=True)
    assert second.quantization == "8bit"
    assert [r.quantization for r in list_models(models)] == ["8bit"]
    assert sorted(p.name for p in models.iterdir()) == ["t"]


def test_cli_success_and_error(tmp_path, tiny_gguf, capsys):
    models = tmp_path / "models"
    assert cli_main([str(tiny_gguf), "--models-dir", str(models), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "converted test-org/tiny-llama" in out and "size on disk" in out and "f32" in out
    assert cli_main([str(tiny_gguf), "--models-dir", str(models), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and err.count("\n") == 1
    assert cli_main([str(tiny_gguf), "--models-dir", str(models), "--quantize", "3"]) == 1
    assert capsys.readouterr().err.startswith("error: argument --quantize")


def as_from_a_terminal() -> None:
    """SIGINT at its default and deliverable, as a terminal starts a command: a shell running
    the tests in the background leaves it ignored in its children, and then Python never raises
    KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def signal_state(pid: int) -> str:
    """The process's blocked, ignored and caught signals, for the failure message (Linux)."""
    status = Path(f"/proc/{pid}/status")
    lines = status.read_text().splitlines() if status.exists() else []
    return "\n".join(line for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def test_ctrl_c_leaves_nothing(tmp_path, real_gguf):
    """SIGINT while tensors are being converted: exit 130 and an empty store."""
    models = tmp_path / "models"
    command = [
        sys.executable,
        "-m",
        "mlxserve.cli.convert",
        str(real_gguf),
        "--models-dir",
        str(models),
        "--id",
        "t/gemma",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=as_from_a_terminal,
    )
    # Interrupted as soon as its progress bar appears: the tensor loop has begun (the first
    # tensors, the embedding among them, take seconds; the whole loop only a few more).
    err = ""
    while "converting:" not in err:
        piece = process.stderr.read(1)
        assert piece, process.communicate()
        err += piece
    signals = signal_state(process.pid)
    process.send_signal(signal.SIGINT)
    _, err_rest = process.communicate(timeout=60)
    err += err_rest + signals
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert_store_empty(models)


def test_a_crash_while_overwriting_leaves_the_old_model(tmp_path, tiny_gguf, real_gguf):
    """SIGKILL (no cleanup can run) while `convert --overwrite` replaces a model (a tiny one,
    by the real Gemma, whose tensor loop lasts long enough to be killed in): the store still
    lists the old model, with its manifest and weights untouched."""
    models = tmp_path / "models"
    place = ["--models-dir", str(models), "--id", "t/gemma"]
    command = [sys.executable, "-m", "mlxserve.cli.convert"]
    subprocess.run([*command, str(tiny_gguf), *place], check=True, capture_output=True, timeout=300)
    model_dir = models / "t" / "gemma"
    before = {path.name: path.read_bytes() for path in model_dir.iterdir()}
    overwrite = [*command, str(real_gguf), *place, "--overwrite"]
    process = subprocess.Popen(overwrite, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(models.glob(".converting-*/tokenizer.json")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    time.sleep(1.0)  # into the tensor loop
    process.kill()
    process.wait(30)
    assert {path.name: path.read_bytes() for path in model_dir.iterdir()} == before
    assert [record.id for record in list_models(models)] == ["t/gemma"]


def test_the_next_conversion_repairs_what_a_killed_one_left(tmp_path, tiny_gguf):
    """A kill between the two renames of an overwrite leaves the old model moved aside: the
    next conversion puts it back. Staging directories of dead processes are removed, those of
    running ones kept."""
    models = tmp_path / "models"
    first = convert_model(tiny_gguf, models, "t/m", progress=False)
    files = {path.name: path.read_bytes() for path in Path(first.path).iterdir()}
    retired = models / ".converting-old-0123abcd"
    Path(first.path).rename(retired)
    dead = models / ".converting-999999999-abc"  # beyond any pid
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"partial")
    running = models / f".converting-{os.getpid()}-def"
    running.mkdir()
    convert_model(tiny_gguf, models, "t/other", progress=False)
    assert {path.name: path.read_bytes() for path in Path(first.path).iterdir()} == files
    assert sorted(record.id for record in list_models(models)) == ["t/m", "t/other"]
    assert not retired.exists() and not dead.exists() and running.exists()
