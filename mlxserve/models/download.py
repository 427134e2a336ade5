"""Models fetched by name from the Hugging Face Hub (or what HF_ENDPOINT points at), into the
Hugging Face cache, where discovery serves them in place.

`REPO` takes MLX weights on Apple Silicon and GGUF elsewhere when a repo has both;
`REPO@QUANT` picks a GGUF quantization (default Q4_K_M); `REPO:FILE` one file. Downloads resume
(huggingface_hub keeps partial files), HF_TOKEN is honoured, and every LFS file's SHA-256 is
checked against the Hub's. A model's config.json (or its GGUF) is fetched last, so a download
cut short leaves nothing that discovery takes for a model; one the disk cannot hold is refused
before any file is fetched."""

from __future__ import annotations

import hashlib
import importlib
import os
import platform
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

DEFAULT_QUANT = "Q4_K_M"
SPEC = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<quant>[\w.-]+)|:(?P<file>.+))?$")
MLX_FILES = re.compile(r"\.(json|safetensors|model|txt|jinja|tiktoken)$")
SHARD = re.compile(r"-\d{5}-of-\d{5}\.gguf$")


class DownloadError(Exception):
    """A download that cannot happen or did not finish; the message is one line."""


@dataclass(frozen=True)
class RepoFile:
    name: str
    size: int
    sha256: str | None  # LFS files only; small text files have none


@dataclass
class DownloadPlan:
    repo: str
    revision: str
    files: list[RepoFile]
    format: str  # mlx | gguf
    done_bytes: int = 0  # read by the status endpoint while a download runs

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """`REPO`, `REPO@QUANT` or `REPO:FILE` (a huggingface.co URL's path also works)."""
    spec = spec.removeprefix("https://huggingface.co/").strip("/")
    match = SPEC.match(spec)
    if match is None:
        raise DownloadError(f"{spec!r} is not a model name (owner/name, @QUANT or :FILE)")
    return match["repo"], match["quant"], match["file"]


def plan_download(spec: str, apple_silicon: bool | None = None) -> DownloadPlan:
    """Ask the Hub what the repo holds and choose the files to fetch."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    repo, quant, filename = parse_spec(spec)
    try:
        info = HfApi(endpoint=endpoint()).model_info(repo, files_metadata=True)
    except RepositoryNotFoundError as exc:
        raise DownloadError(f"{repo} was not found on {endpoint()}") from exc
    except (HfHubHTTPError, OSError, *_transport_errors()) as exc:  # offline, refused, timeout
        raise DownloadError(f"cannot reach {endpoint()}: {_first_line(exc)}") from exc
    files = [
        RepoFile(s.rfilename, s.size or 0, s.lfs.sha256 if s.lfs else None)
        for s in info.siblings or []
    ]
    if apple_silicon is None:
        apple_silicon = platform.system() == "Darwin" and platform.machine() == "arm64"
    chosen, kind = _choose(files, quant, filename, apple_silicon, repo)
    return DownloadPlan(repo, info.sha, chosen, kind)


def _choose(files, quant, filename, apple_silicon, repo) -> tuple[list[RepoFile], str]:
    names = {f.name: f for f in files}
    if filename is not None:
        if filename not in names:
            raise DownloadError(f"{repo} has no file {filename}")
        return [names[filename]], "gguf" if filename.endswith(".gguf") else "file"
    ggufs = [f for f in files if f.name.endswith(".gguf")]
    has_mlx = "config.json" in names and any(n.endswith(".safetensors") for n in names)
    if has_mlx and quant is None and (apple_silicon or not ggufs):
        weights = [f for f in files if MLX_FILES.search(f.name) and f.name != "config.json"]
        return [*weights, names["config.json"]], "mlx"
    if not ggufs:
        raise DownloadError(f"{repo} has neither MLX (config.json, .safetensors) nor GGUF files")
    return _gguf_files(ggufs, quant or DEFAULT_QUANT, repo), "gguf"


def _gguf_files(ggufs: list[RepoFile], quant: str, repo: str) -> list[RepoFile]:
    """The quantization's file (every shard of a split one) and the vision projector, if the
    repo has one; the model's first file comes last."""
    projectors = [f for f in ggufs if f.name.lower().startswith("mmproj")]
    weights = [f for f in ggufs if f not in projectors]
    # The label exactly: Q4_K must not take Q4_K_M or Q4_K_S.
    wanted = [f for f in weights if _quant_of(f.name).lower() == quant.lower()]
    if not wanted:
        available = sorted({_quant_of(f.name) for f in weights})
        raise DownloadError(f"{repo} has no {quant} file; it has: {', '.join(available)}")
    projector = sorted(projectors, key=lambda f: ("f16" not in f.name.lower(), f.name))[:1]
    wanted.sort(key=lambda f: f.name)
    return [*projector, *wanted[1:], wanted[0]]


def _quant_of(name: str) -> str:
    stem = SHARD.sub("", name).removesuffix(".gguf")
    return re.split(r"[-.]", stem)[-1]


def run_download(plan: DownloadPlan, progress: bool = True) -> Path:
    """Fetch the plan's files into the Hugging Face cache; returns the snapshot directory."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    check_disk_space(plan)
    path, finished = None, 0
    for repo_file in plan.files:
        try:
            path = hf_hub_download(
                plan.repo,
                repo_file.name,
                revision=plan.revision,
                endpoint=endpoint(),
                tqdm_class=_counting_bar(plan, progress),
            )
        except (HfHubHTTPError, OSError, *_transport_errors()) as exc:
            raise DownloadError(f"{repo_file.name}: {_first_line(exc)}") from exc
        _verify(Path(path), repo_file)
        finished += repo_file.size
        plan.done_bytes = finished  # exact, whatever the bar counted (a cached file counts none)
    return Path(path).parent


def check_disk_space(plan: DownloadPlan) -> None:
    """Refuse a download whose files the disk cannot hold; files cached already need no room."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_CACHE

    cache = Path(HF_HUB_CACHE)
    needed = sum(
        f.size
        for f in plan.files
        if not isinstance(try_to_load_from_cache(plan.repo, f.name, revision=plan.revision), str)
    )
    existing = next(folder for folder in (cache, *cache.parents) if folder.exists())
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise DownloadError(
            f"{plan.repo} needs {_gib(needed)} GiB of disk space, only {_gib(free)} GiB is free "
            f"at {cache}"
        )


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f}"


def _counting_bar(plan: DownloadPlan, shown: bool):
    """huggingface_hub's progress bar class, also counting bytes into the plan."""
    from tqdm.auto import tqdm

    class CountingBar(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": not shown})

        def update(self, n=1):
            plan.done_bytes += n or 0
            return super().update(n)

    return CountingBar


def _verify(path: Path, repo_file: RepoFile) -> None:
    """A file whose bytes do not hash to the Hub's SHA-256 is removed, link and blob."""
    if repo_file.sha256 is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != repo_file.sha256:
        blob = path.resolve()
        path.unlink()
        blob.unlink(missing_ok=True)
        raise DownloadError(f"{repo_file.name}: checksum mismatch (the download is corrupt)")


def _transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP client's own errors (httpx2 under huggingface_hub 2, httpx before)."""
    errors = []
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).TransportError)
        except ImportError:
            continue
    return tuple(errors)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
