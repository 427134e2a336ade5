"""Downloads a server runs for its clients: each a job, fetched one at a time on a worker thread
(models/download.py does the fetching). At most MAX_PENDING_JOBS wait or run at once; more are
refused (a 429). A job that cannot reach the Hub, or whose files the disk cannot hold, ends as
`failed` with the reason; finished jobs are kept for their status, the oldest forgotten beyond a
bound."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mlxserve.models.download import DownloadError, DownloadPlan, plan_download, run_download
from mlxserve.models.loaded import RegistryError

log = logging.getLogger(__name__)
FINISHED_JOBS_KEPT = 64  # finished downloads whose status can still be asked for
MAX_PENDING_JOBS = 8  # downloads waiting or running; each may take many minutes


@dataclass
class DownloadJob:
    spec: str
    id: str = field(default_factory=lambda: f"job_{secrets.token_hex(5)}")
    status: str = "downloading"  # downloading | completed | failed
    started: float = field(default_factory=time.time)
    completed: float | None = None
    error: str | None = None
    plan: DownloadPlan | None = None


class Downloads:
    """The jobs this server started, and the one thread that runs them in turn."""

    def __init__(
        self, finished_kept: int = FINISHED_JOBS_KEPT, max_pending: int = MAX_PENDING_JOBS
    ):
        self.jobs: dict[str, DownloadJob] = {}
        self.finished_kept, self.max_pending = finished_kept, max_pending
        self._starting = threading.Lock()  # requests start jobs from threads of their own
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="download")

    def start(self, spec: str) -> DownloadJob:
        """A new job, queued; a 429 when `max_pending` jobs wait or run already."""
        with self._starting:
            pending = sum(job.completed is None for job in self.jobs.values())
            if pending >= self.max_pending:
                raise RegistryError(
                    429,
                    f"{pending} downloads are waiting or running, the most this server queues; "
                    "retry once one has finished (GET /api/v1/models/download/status/<job_id>)",
                    "download_queue_full",
                )
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
