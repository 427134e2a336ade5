"""LM Studio's download API: POST /api/v1/models/download starts fetching a model from the
Hugging Face Hub into the Hugging Face cache (where discovery serves it), and
GET /api/v1/models/download/status/<job_id> reports its progress. Downloads run one at a time
on a worker thread; a job that cannot reach the Hub ends as `failed` with the reason."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from quart import Blueprint, current_app, jsonify

from mlxserve.api.http.parsing import answers, with_body
from mlxserve.api.lmstudio.answer_schemas import V1DownloadJob
from mlxserve.api.shared.protocol import OpenAIModel
from mlxserve.models.download import DownloadError, DownloadPlan, parse_spec
from mlxserve.pipeline.errors import RequestError

log = logging.getLogger(__name__)
FINISHED_JOBS_KEPT = 64  # finished downloads whose status can still be asked for

blueprint = Blueprint("lmstudio_v1_downloads", __name__, url_prefix="/api/v1/models/download")


class DownloadRequest(OpenAIModel):
    model: str  # owner/name or a huggingface.co URL
    quantization: str | None = None  # a GGUF quantization such as Q4_K_M


@dataclass
class DownloadJob:
    spec: str
    id: str = field(default_factory=lambda: f"job_{secrets.token_hex(5)}")
    status: str = "downloading"  # downloading | completed | failed
    started: float = field(default_factory=time.time)
    completed: float | None = None
    error: str | None = None
    plan: DownloadPlan | None = None

    def report(self) -> dict:
        body = {"job_id": self.id, "status": self.status, "started_at": _iso(self.started)}
        if self.plan is not None:
            body["total_size_bytes"] = self.plan.total_bytes
            body["downloaded_bytes"] = self.plan.done_bytes
        if self.status == "downloading" and self.plan is not None:
            elapsed = max(time.time() - self.started, 1e-3)
            body["bytes_per_second"] = round(self.plan.done_bytes / elapsed)
        if self.completed is not None:
            body["completed_at"] = _iso(self.completed)
        if self.error is not None:
            body["error"] = self.error
        return body


class Downloads:
    """The jobs this server started, and the one thread that runs them in turn. Finished jobs
    are kept for their status, the oldest forgotten beyond a bound."""

    def __init__(self, finished_kept: int = FINISHED_JOBS_KEPT):
        self.jobs: dict[str, DownloadJob] = {}
        self.finished_kept = finished_kept
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="download")

    def start(self, spec: str) -> DownloadJob:
        self._forget_old()
        job = DownloadJob(spec)
        self.jobs[job.id] = job
        self._worker.submit(_run, job)
        return job

    def _forget_old(self) -> None:
        finished = [job for job in self.jobs.values() if job.completed is not None]
        for job in sorted(finished, key=lambda j: j.completed)[: -self.finished_kept or None]:
            del self.jobs[job.id]

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


def _run(job: DownloadJob) -> None:
    from mlxserve.models.download import plan_download, run_download

    try:
        job.plan = plan_download(job.spec)
        run_download(job.plan, progress=False)
        job.status = "completed"
    except DownloadError as exc:
        job.status, job.error = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure ends the job as failed, with why
        log.exception("download %s failed", job.spec)
        job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
    job.completed = time.time()


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
    registry = current_app.registry
    known = [repo, f"{repo}@{quant}"] if quant else [repo]
    if filename is None and any([await registry.find(name) for name in known]):
        return jsonify({"status": "already_downloaded"})
    spec = f"{repo}:{filename}" if filename else f"{repo}@{quant}" if quant else repo
    job = await asyncio.to_thread(current_app.downloads.start, spec)
    return jsonify(job.report())


@blueprint.get("/status/<job_id>")
@answers(V1DownloadJob)
async def download_status(job_id: str):
    """A download job's progress."""
    job = current_app.downloads.jobs.get(job_id)
    if job is None:
        raise RequestError(404, f"no download job '{job_id}'", "job_id", "not_found")
    return jsonify(job.report())


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
