"""/api/pull through the server's download jobs (models/download_jobs.py): an Ollama name read
as a Hugging Face repo (`owner/name`, `hf.co/owner/name:QUANT`), fetched into the Hugging Face
cache where discovery serves it, with Ollama's status lines streamed while it runs, then
{"status": "success"}, or an {"error": ...} when it fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from quart import Blueprint, jsonify

from mlxserve.api.http.ndjson import ndjson_response, streams_ndjson
from mlxserve.api.http.parsing import answers, with_body
from mlxserve.api.ollama.answers import PullStatus
from mlxserve.api.ollama.names import LATEST, split_tag
from mlxserve.api.ollama.protocol import PullRequest
from mlxserve.api.state import server_state
from mlxserve.models.download import DownloadError, parse_spec
from mlxserve.models.download_jobs import DownloadJob
from mlxserve.models.registry import ModelRegistry
from mlxserve.pipeline.errors import RequestError

blueprint = Blueprint("ollama_pull", __name__)
POLL_SECONDS = 0.25  # how often a pull looks at its job's progress
HUB_PREFIXES = ("hf.co/", "huggingface.co/", "https://huggingface.co/", "https://hf.co/")


def download_spec(name: str) -> str:
    """The download job's spec (`owner/name` or `owner/name@QUANT`) for an Ollama name."""
    for prefix in HUB_PREFIXES:
        name = name.removeprefix(prefix)
    base, tag = split_tag(name)
    if "/" not in base:
        message = (
            f"'{name}' is a name in Ollama's library, which this server does not pull from; "
            "pull a Hugging Face repo instead (owner/name, or hf.co/owner/name:QUANT)"
        )
        raise RequestError(400, message, "model", "invalid_value")
    spec = base if tag == LATEST else f"{base}@{tag}"
    try:
        parse_spec(spec)
    except DownloadError as exc:
        raise RequestError(400, str(exc), "model", "invalid_value") from exc
    return spec


@blueprint.post("/api/pull")
@streams_ndjson
@answers(PullStatus)
@with_body(PullRequest)
async def pull(body: PullRequest):
    """Download a model: status lines as it goes, or one status with `stream: false`."""
    spec = download_spec(body.model_name)
    state = server_state()
    if await state.registry.find(spec) is None:
        job = await asyncio.to_thread(state.downloads.start, spec)
    else:
        job = None  # on the machine already
    if body.stream:
        return await ndjson_response(_progress(job, state.registry, spec))
    if job is not None:
        while job.completed is None:
            await asyncio.sleep(POLL_SECONDS)
        await _finished(job, state.registry, spec)
    return jsonify(PullStatus(status="success").as_dict())


async def _progress(
    job: DownloadJob | None, registry: ModelRegistry, spec: str
) -> AsyncIterator[dict]:
    yield PullStatus(status="pulling manifest").as_dict()
    sent = None
    while job is not None:
        await asyncio.sleep(POLL_SECONDS)
        plan = job.plan
        if plan is not None and plan.done_bytes != sent:
            sent = plan.done_bytes
            status = PullStatus(status=f"pulling {plan.repo}", digest=plan.revision)
            status.total, status.completed = plan.total_bytes, plan.done_bytes
            yield status.as_dict()
        if job.completed is not None:
            await _finished(job, registry, spec)
            break
    yield PullStatus(status="success").as_dict()


async def _finished(job: DownloadJob, registry: ModelRegistry, spec: str) -> None:
    """Raise the job's failure; after a success, look the model up so that the listings
    (/api/tags) have it at once rather than at their next scan."""
    if job.status == "failed":
        # The Hub (or the way to it) could not supply the model: not this server's fault.
        raise RequestError(424, f"pull failed: {job.error}", "model", "download_failed")
    await registry.find(spec)
