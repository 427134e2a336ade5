"""The one thread that owns a model's MLX state: loading, prefill, batched decode, prompt cache.

Sequences arrive through a queue and are admitted between decode steps (continuous batching):
each new prompt is prefilled into its own cache, one chunk between two decode steps of the running
batch (so a long prompt never stalls the streams already decoding), then merged into the batch
cache, and every decode step runs all active sequences through the model at once.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

import mlx.core as mx
from mlx_lm.models.cache import LRUPromptCache

from mlxserve.engine.base import PROMPT_CACHE_BYTES, EngineUnavailable
from mlxserve.engine.mlx import wired_memory
from mlxserve.engine.mlx.architectures.text_model import TextModel
from mlxserve.engine.mlx.serving.device_sampling import ReadAhead
from mlxserve.engine.mlx.serving.disk_prompt_cache import DiskPromptCache
from mlxserve.engine.mlx.serving.prompt_reading import (
    PREFILL_CHUNK,
    Prefill,
    PromptReading,
)
from mlxserve.engine.mlx.serving.sequence import Sequence
from mlxserve.engine.mlx.serving.speculative_decoding import (
    DraftSources,
    check_drafts,
    propose_drafts,
)
from mlxserve.engine.mlx.serving.step_profile import NoProfile, StepProfile
from mlxserve.engine.mlx.serving.task import Task
from mlxserve.engine.mlx.serving.token_choice import TokenChoice

log = logging.getLogger(__name__)

PROMPT_CACHE_ENTRIES = 8
# MLX keeps freed buffers for reuse, and without a bound that pool grows with every batch shape
# it meets: it is given back after a prompt is read, when idle and every so many decode steps.
FREE_BUFFERS_EVERY = 256
STOP_TIMEOUT_SECONDS = 30  # a long prefill chunk or decode step ends well within this


class BatchRunner(PromptReading, TokenChoice):
    def __init__(
        self,
        load_model,
        max_batch_size: int = 8,
        prompt_cache_bytes: int = PROMPT_CACHE_BYTES,
        prompt_lookup: bool = False,
        disk_cache: DiskPromptCache | None = None,
        kv_budget_tokens: int | None = None,
        profile: StepProfile | None = None,
        device_sampling: bool = False,
    ):
        # Called on the runner thread; returns (model, tokenizer), the model a TextModel or a
        # VisionLanguageModel.
        self._load_model = load_model
        self.max_batch_size = max_batch_size
        # KV tokens memory holds for the batch: each sequence counts its prompt and its longest
        # reply, so long agent prompts decode fewer at a time than short chats. None: no bound.
        self.kv_budget_tokens = kv_budget_tokens
        self.most_decoding = 0  # the largest batch decoded so far
        self._drafts = DraftSources(prompt_lookup, PREFILL_CHUNK)
        self.profile = profile or NoProfile()  # where decode steps spend their time
        # Rows that allow it take their token on the device, the next step built ahead of the
        # host (device_sampling.py); ranks that must agree on every token sample on the host.
        self.device_sampling = device_sampling
        self.ready: Future = Future()  # resolves to (model, tokenizer) once loaded
        self._inbox: queue.Queue[Sequence | Task | None] = queue.Queue()
        self._waiting: list[Sequence] = []
        self._tasks: list[Task] = []  # whole computations run between two steps (rerank)
        self._prefilling: Prefill | None = None  # the prompt being read, a chunk per step
        self._reading = 0  # short prompts being read together, taken from the waiting list
        self._active: list[Sequence] = []
        self._batch_cache: list | None = None
        self._ahead = ReadAhead()  # device-chosen tokens the host has not yet taken
        self._prompt_cache = LRUPromptCache(PROMPT_CACHE_ENTRIES, prompt_cache_bytes)
        self._disk_cache = disk_cache  # long prefixes, kept across restarts
        # Written by the runner thread only: what it did, for /metrics and the load tests.
        self.tokens_sampled = 0
        self.tokens_on_device = 0  # of those, chosen on the device (device_sampling.py)
        self.sequences_cancelled = 0
        self.max_tokens_after_cancel = 0  # sampled for a sequence after its client left
        self.prefill_chunks = 0
        self.decode_steps = 0
        self.speculative_steps = 0
        self.joined_running_batch = 0  # sequences that joined a batch already decoding
        self._chunks_since_decode = 0
        self.max_chunks_between_decodes = 0  # prefill chunks run while streams waited
        self.stopped_by: BaseException | None = None  # what ended the thread, if it failed
        self._thread = threading.Thread(target=self._run, name="mlx-runner", daemon=True)

    def start(self) -> Future:
        self._thread.start()
        return self.ready

    @property
    def active_count(self) -> int:
        """Sequences admitted or waiting; read from other threads for status reports."""
        prefilling = self._prefilling is not None
        queued = len(self._waiting) + self._inbox.qsize()
        return len(self._active) + prefilling + self._reading + queued

    @property
    def prompt_cache_bytes(self) -> int:
        """Bytes of KV state the prompt cache holds now."""
        return self._prompt_cache.nbytes

    def counters(self) -> dict[str, int]:
        return {
            "sequences": self.active_count,
            "decoding": len(self._active),
            "most_decoding": self.most_decoding,
            "tokens_sampled": self.tokens_sampled,
            "tokens_on_device": self.tokens_on_device,
            "sequences_cancelled": self.sequences_cancelled,
            "max_tokens_after_cancel": self.max_tokens_after_cancel,
            "prefill_chunks": self.prefill_chunks,
            "joined_running_batch": self.joined_running_batch,
            "max_prefill_chunks_between_decodes": self.max_chunks_between_decodes,
            "speculative_steps": self.speculative_steps,
            "disk_cache_blocks_written": self._disk_cache.blocks_written if self._disk_cache else 0,
            "disk_cache_blocks_read": self._disk_cache.blocks_read if self._disk_cache else 0,
        }

    def submit(self, sequence: Sequence) -> None:
        """Queue a sequence; refused at once when the runner thread has stopped."""
        if self.stopped_by is not None:
            raise EngineUnavailable(f"the model's runner stopped ({self.stopped_by}); reload it")
        self._inbox.put(sequence)

    def run_task(self, work: Callable) -> Future:
        """Run `work(model)` on this thread between two steps; the future has its result."""
        if self.stopped_by is not None:
            raise EngineUnavailable(f"the model's runner stopped ({self.stopped_by}); reload it")
        task = Task(work)
        self._inbox.put(task)
        return task.result

    def stop(self) -> None:
        self._inbox.put(None)
        # The thread ends after the step it is in; one stuck in MLX must not hang the shutdown.
        self._thread.join(STOP_TIMEOUT_SECONDS)
        if self._thread.is_alive():
            log.warning("the MLX runner did not stop within %d s", STOP_TIMEOUT_SECONDS)

    def _run(self) -> None:
        if not self._load():
            return
        try:
            self._serve()
        except BaseException as exc:  # noqa: BLE001 - every waiting request is told, then it ends
            log.exception("the MLX runner stopped")
            self.stopped_by = exc
            self._fail_all(EngineUnavailable(f"the model's runner stopped ({exc}); reload it"))
        else:
            self._fail_all(EngineUnavailable("the model was unloaded during the request"))
        finally:
            self._release()
            wired_memory.unwire()

    def _release(self) -> None:
        """The model's arrays and every state kept for it let go, and MLX's pool of freed
        buffers given back: an unloaded model leaves no memory behind, whoever still holds
        this runner."""
        self.model = self._drafts = self._batch_cache = self._prefilling = None
        self._active, self._prompt_cache = [], LRUPromptCache(PROMPT_CACHE_ENTRIES, 0)
        self.ready = Future()  # its result held the model too; the load did succeed
        self.ready.set_result(None)
        mx.clear_cache()

    def _serve(self) -> None:
        while self._collect_new(block=not self._active and self._prefilling is None):
            self._run_tasks()
            self._drop_cancelled_waiting()
            if self._prefilling is None and self._waiting and self._fits([self._waiting[0]]):
                group = self._short_prompts()
                if len(group) > 1:
                    self._guarded(self._prefill_group, group, group)
                else:
                    sequence = self._waiting.pop(0)
                    self._guarded(self._start_prefill, [sequence], sequence)
            if self._prefilling is not None:
                self._guarded(self._prefill_chunk, [self._prefilling.sequence])
            if self._active:
                self._guarded(self._decode_step, self._active)
            if not self._active and self._prefilling is None:
                mx.clear_cache()  # idle: the pool's buffers go back to the system

    def _load(self) -> bool:
        """Load the model on this thread; False (the loader told why) when that failed."""
        try:
            self.model, self.tokenizer = self._load_model()
        except BaseException as exc:  # noqa: BLE001 - reported to the loader, not swallowed
            self.ready.set_exception(exc)
            return False
        self.ready.set_result((self.model, self.tokenizer))
        wired_memory.wire()
        # Only a text model whose layers keep one key and value per token (no recurrent state,
        # no images) reads prompts together, stores them on disk and takes drafts back.
        self._per_token = isinstance(self.model, TextModel) and self.model.per_token_cache
        if not self._per_token:
            self._disk_cache = None
        return True

    def _collect_new(self, block: bool) -> bool:
        """Move queued sequences into the waiting list; False once stop() was called."""
        try:
            item = self._inbox.get(block=block and not self._waiting)
            while True:
                if item is None:
                    return False
                (self._tasks if isinstance(item, Task) else self._waiting).append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            return True

    def _run_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.run(self.model)

    def _drop_cancelled_waiting(self) -> None:
        """Requests whose clients left before they had a slot leave at once, not when a slot
        frees up."""
        if any(sequence.cancelled.is_set() for sequence in self._waiting):
            for sequence in self._waiting:
                if sequence.cancelled.is_set():
                    self._count_cancelled(sequence)
            self._waiting = [s for s in self._waiting if not s.cancelled.is_set()]

    def _fits(self, newcomers: list[Sequence]) -> bool:
        """Whether the batch has places for `newcomers` and memory for their KV beside what
        the admitted sequences may grow to; an empty batch always takes one."""
        if len(self._active) + len(newcomers) > self.max_batch_size:
            return False
        if self.kv_budget_tokens is None or (not self._active and len(newcomers) == 1):
            return True
        reserved = sum(s.longest_tokens for s in [*self._active, *newcomers])
        return reserved <= self.kv_budget_tokens

    def _guarded(self, step, sequences: list[Sequence], *args) -> None:
        """Run a step; an exception ends the sequences it touched, never the runner thread."""
        try:
            step(*args)
        except Exception as exc:  # noqa: BLE001 - every failure must reach its client
            self._step_failed(step, sequences, exc)

    def _step_failed(self, step, sequences: list[Sequence], exc: Exception) -> None:
        log.exception("generation step failed")
        for sequence in sequences:
            sequence.emit(exc)
        if step == self._decode_step:
            self._active, self._batch_cache = [], None
            self._ahead.clear()
        if step == self._prefill_chunk:
            self._prefilling = None

    def _join_batch(self, sequences: list[Sequence], batch_cache: list) -> None:
        self._ahead.extend(len(sequences))
        if self._batch_cache is None:
            self._batch_cache = batch_cache
        else:
            for batch_layer, new_layer in zip(self._batch_cache, batch_cache, strict=True):
                batch_layer.extend(new_layer)
            self.joined_running_batch += len(sequences)
        self._active.extend(sequences)
        self.most_decoding = max(self.most_decoding, len(self._active))

    def _decode_step(self) -> None:
        with self.profile.step(len(self._active)):
            self._timed_decode_step()
        self.decode_steps += 1
        if self.decode_steps % FREE_BUFFERS_EVERY == 0:
            mx.clear_cache()

    def _timed_decode_step(self) -> None:
        with self.profile.phase("schedule"):
            self.max_chunks_between_decodes = max(
                self.max_chunks_between_decodes, self._chunks_since_decode
            )
            self._chunks_since_decode = 0
            left = self._departed(self._active)
            for row in left:
                self._count_cancelled(self._active[row])
            self._drop(left)
        if not self._active:
            return
        if len(self._active) == 1 and self._active[0].drafter is not None:
            drafts = propose_drafts(self._active[0])
            if drafts:
                self._speculative_step(self._active[0], drafts)
                return
        if self._ahead_ends_a_reply():
            self._take_ahead(read=False)  # no step is computed past a reply's last token
            self._retire_finished()
            if not self._active:
                return
        with self.profile.phase("graph"):
            inputs = self._ahead.inputs(self._active)
            logits = self.model.decode(inputs[:, None], self._batch_cache, self._active)[:, -1, :]
        self._choose(logits)
        with self.profile.phase("retire"):
            self._retire_finished()

    def _departed(self, sequences: list[Sequence]) -> list[int]:
        """The rows whose clients left."""
        return [row for row, sequence in enumerate(sequences) if sequence.cancelled.is_set()]

    def _retire_finished(self) -> None:
        self._retire_rows([row for row, s in enumerate(self._active) if s.finished])

    def _retire_rows(self, rows: list[int]) -> None:
        for row in rows:
            self._retire(self._active[row], [c.extract(row) for c in self._batch_cache])
        self._drop(rows)

    def _speculative_step(self, sequence: Sequence, drafts: list[int]) -> None:
        self.speculative_steps += 1
        self.tokens_sampled += check_drafts(self.model, self._batch_cache, sequence, drafts)
        if sequence.finished:
            self._retire_rows([0])

    def _drop(self, rows) -> None:
        rows = set(rows)
        if not rows:
            return
        keep = [i for i in range(len(self._active)) if i not in rows]
        self._active = [self._active[i] for i in keep]
        self._ahead.keep(keep)
        if not keep:
            self._batch_cache = None
            return
        for layer in self._batch_cache:
            layer.filter(mx.array(keep))

    def _count_cancelled(self, sequence: Sequence) -> None:
        self.sequences_cancelled += 1
        overrun = sequence.tokens_after_cancel
        self.max_tokens_after_cancel = max(self.max_tokens_after_cancel, overrun)

    def _retire(self, sequence: Sequence, cache: list) -> None:
        """Cache the sequence's prefix, then finish it: a follow-up may come at once. One that
        failed has had its error instead, and its cache (ahead of its tokens) is not kept, on
        every rank alike."""
        if sequence.failed:
            return
        try:
            self._prompt_cache.insert_cache(sequence.cache_model, sequence.processed_key, cache)
        finally:
            sequence.finish()

    def _fail_all(self, exc: BaseException) -> None:
        prefilling = [self._prefilling.sequence] if self._prefilling else []
        for sequence in self._active + prefilling + self._waiting:
            sequence.emit(exc)
        for task in self._tasks:
            task.emit(exc)
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if item is not None:
                item.emit(exc)
