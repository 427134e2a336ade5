"""LM Studio's download API: POST /api/v1/models/download starts fetching a model from the
Hugging Face Hub into the Hugging Face cache (where discovery serves it), and
GET /api/v1/models/download/status/<job_id> reports its progress. The jobs and the worker that
runs them are the models layer's (models/download_jobs.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from quart import Blueprint

from mlxserve.api.http.parsing import answers, with_body
from mlxserve.api.lmstudio.answers import V1DownloadJob
from mlxserve.api.shared.protocol import OpenAIModel
from mlxserve.api.state import server_state
from mlxserve.models.download import DownloadError, parse_spec
from mlxserve.models.download_jobs import DownloadJob
from mlxserve.pipeline.errors import RequestError

blueprint = Blueprint("lmstudio_v1_downloads", __name__, url_prefix="/api/v1/models/download")


class DownloadRequest(OpenAIModel):
    model: str  # owner/name or a huggingface.co URL
    quantization: str | None = None  # a GGUF quantization such as Q4_K_M


@blueprint.post("")
@answers(V1DownloadJob)
@with_body(DownloadRequest)
async def start_download(body: DownloadRequest):
    """Start downloading a model; `already_downloaded` when it is on the machine already."""
    try:
        repo, quant, filename = parse_spec(body.model)
    except DownloadError as exc:
        raise RequestError(400, str(exc), "model", "invalid_value") from exc
    quant = body.quantization or quant
    registry = server_state().registry
    known = [repo, f"{repo}@{quant}"] if quant else [repo]
    if filename is None and any([await registry.find(name) for name in known]):
        return V1DownloadJob(status="already_downloaded").as_dict()
    spec = f"{repo}:{filename}" if filename else f"{repo}@{quant}" if quant else repo
    job = await asyncio.to_thread(server_state().downloads.start, spec)
    return job_report(job).as_dict()


@blueprint.get("/status/<job_id>")
@answers(V1DownloadJob)
async def download_status(job_id: str):
    """A download job's progress."""
    job = server_state().downloads.jobs.get(job_id)
    if job is None:
        raise RequestError(404, f"no download job '{job_id}'", "job_id", "not_found")
    return job_report(job).as_dict()


def job_report(job: DownloadJob) -> V1DownloadJob:
    report = V1DownloadJob(job_id=job.id, status=job.status, started_at=_iso(job.started))
    if job.plan is not None:
        report.total_size_bytes = job.plan.total_bytes
        report.downloaded_bytes = job.plan.done_bytes
    if job.status == "downloading" and job.plan is not None:
        elapsed = max(time.time() - job.started, 1e-3)
        report.bytes_per_second = round(job.plan.done_bytes / elapsed)
    if job.completed is not None:
        report.completed_at = _iso(job.completed)
    if job.error is not None:
        report.error = job.error
    return report


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
