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
from concurrent.futures import Future
from dataclasses import dataclass

import mlx.core as mx
from mlx_lm.models.cache import LRUPromptCache

from mlxserve.engine.base import PROMPT_CACHE_BYTES, EngineUnavailable
from mlxserve.engine.mlx.architectures.text_model import TextModel, logits_as_numpy
from mlxserve.engine.mlx.serving.disk_prompt_cache import (
    BLOCK,
    BlockWriter,
    DiskPromptCache,
    block_names,
)
from mlxserve.engine.mlx.serving.runner_job import RunnerJob
from mlxserve.engine.mlx.serving.sequence import Sequence
from mlxserve.engine.mlx.serving.speculative_decoding import (
    DraftSources,
    check_drafts,
    propose_drafts,
)
from mlxserve.engine.mlx.serving.step_profile import NoProfile, StepProfile

log = logging.getLogger(__name__)

# Prompt tokens read between two decode steps: bounds memory, and how long a running stream
# waits for a new prompt (docs/engines.md has the measurement behind it).
PREFILL_CHUNK = 128
PROMPT_CACHE_ENTRIES = 8
# MLX keeps freed buffers for reuse, and without a bound that pool grows with every batch shape
# it meets: it is given back after a prompt is read, when idle and every so many decode steps.
FREE_BUFFERS_EVERY = 256
STOP_TIMEOUT_SECONDS = 30  # a long prefill chunk or decode step ends well within this


class BatchRunner:
    def __init__(
        self,
        load_model,
        max_batch_size: int = 8,
        prompt_cache_bytes: int = PROMPT_CACHE_BYTES,
        prompt_lookup: bool = False,
        disk_cache: DiskPromptCache | None = None,
        kv_budget_tokens: int | None = None,
        profile: StepProfile | None = None,
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
        self.ready: Future = Future()  # resolves to (model, tokenizer) once loaded
        self._inbox: queue.Queue[Sequence | RunnerJob | None] = queue.Queue()
        self._waiting: list[Sequence] = []
        self._prefilling: Prefill | None = None  # the prompt being read, a chunk per step
        self._active: list[Sequence] = []
        self._batch_cache: list | None = None
        self._prompt_cache = LRUPromptCache(PROMPT_CACHE_ENTRIES, prompt_cache_bytes)
        self._disk_cache = disk_cache  # long prefixes, kept across restarts
        # Written by the runner thread only: what it did, for /metrics and the load tests.
        self.tokens_sampled = 0
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
        return len(self._active) + prefilling + len(self._waiting) + self._inbox.qsize()

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
            "sequences_cancelled": self.sequences_cancelled,
            "max_tokens_after_cancel": self.max_tokens_after_cancel,
            "prefill_chunks": self.prefill_chunks,
            "joined_running_batch": self.joined_running_batch,
            "max_prefill_chunks_between_decodes": self.max_chunks_between_decodes,
            "speculative_steps": self.speculative_steps,
            "disk_cache_blocks_written": self._disk_cache.blocks_written if self._disk_cache else 0,
            "disk_cache_blocks_read": self._disk_cache.blocks_read if self._disk_cache else 0,
        }

    def submit(self, sequence: Sequence | RunnerJob) -> None:
        """Queue a sequence (or a job, run between two steps); refused at once when the runner
        thread has stopped."""
        if self.stopped_by is not None:
            raise EngineUnavailable(f"the model's runner stopped ({self.stopped_by}); reload it")
        self._inbox.put(sequence)

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
            return
        self._fail_all(EngineUnavailable("the model was unloaded during the request"))

    def _serve(self) -> None:
        while self._collect_new(block=not self._active and self._prefilling is None):
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
                if isinstance(item, RunnerJob):
                    item.run(self.model, self.tokenizer)
                else:
                    self._waiting.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            return True

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

    def _short_prompts(self) -> list[Sequence]:
        """Waiting sequences, in order, whose prompts are short enough to read together in one
        padded pass of at most two chunks' worth of positions (a burst of new chats)."""
        group: list[Sequence] = []
        for sequence in self._waiting if self._per_token else []:
            width = max(len(s.prompt_tokens) for s in [*group, sequence])
            if len(sequence.prompt_tokens) > PREFILL_CHUNK or width * (len(group) + 1) > 2 * (
                PREFILL_CHUNK
            ):
                break
            if not self._fits([*group, sequence]):
                break
            group.append(sequence)
        return group

    def _prefill_group(self, group: list[Sequence]) -> None:
        """Read short prompts together, left-padded to the longest: one pass fills their cache,
        one more over their last tokens gives each its first token. Reading them again costs
        less than the passes a cached prefix would save, so the prompt cache is not asked."""
        self._waiting = self._waiting[len(group) :]
        for sequence in group:
            self._prepare(sequence)
        width = max(len(s.prompt_tokens) for s in group) - 1
        padding = [width - len(s.prompt_tokens) + 1 for s in group]
        cache = self.model.make_batch_cache(padding)
        if width:
            rows = [[0] * pad + s.prompt_tokens[:-1] for pad, s in zip(padding, group, strict=True)]
            self.model.decode(mx.array(rows), cache, group)
            mx.eval([c.state for c in cache])
        self.prefill_chunks += 1
        last = mx.array([[s.prompt_tokens[-1]] for s in group])
        self._sample(group, self.model.decode(last, cache, group)[:, -1, :])
        finished = [row for row, s in enumerate(group) if s.finished]
        for row in finished:
            self._retire(group[row], [c.extract(row) for c in cache])
        kept = [row for row in range(len(group)) if row not in finished]
        if kept:
            if finished:
                for layer in cache:
                    layer.filter(mx.array(kept))
            self._join_batch([group[row] for row in kept], cache)

    def _start_prefill(self, sequence: Sequence) -> None:
        """Begin reading a prompt, from the longest prefix of it cached in memory or on disk."""
        key = sequence.prompt_key[:-1]  # the last token is read when the first is sampled
        cache, remaining = self._prompt_cache.fetch_nearest_cache(sequence.cache_model, key)
        cached = len(key) - len(remaining)
        writer = None
        if self._disk_cache is not None and sequence.request.adapter is None:
            names = block_names(key)
            stored = self._disk_cache.stored_prefix(names)
            if len(stored) * BLOCK > cached:
                from_disk = self.model.make_cache()
                loaded = self._disk_cache.load(stored, from_disk)
                if loaded > cached:
                    cache, cached = from_disk, loaded
            writer = BlockWriter(self._disk_cache, names, cached)
        sequence.cached_prompt_tokens = cached
        self._prepare(sequence)
        cache = cache or self.model.make_cache()
        self._prefilling = Prefill(sequence, cache, cached, writer)

    def _prepare(self, sequence: Sequence) -> None:
        """Ready a sequence's sampler and drafts as its prompt begins to be read."""
        sequence.sampler.feed_prompt(sequence.prompt_tokens)
        sequence.drafter = self._drafter(sequence)

    def _drafter(self, sequence: Sequence):
        """Where the sequence's drafts come from, when it decodes speculatively: only a text
        model whose cache can be taken back after a rejected draft speculates; drafts carry no
        log-probabilities, so a sequence that reports them decodes token by token."""
        speculates = self._per_token and sequence.request.top_logprobs is None
        return self._drafts.drafter_for(sequence) if speculates else None

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
        if step == self._prefill_chunk:
            self._prefilling = None

    def _prefill_chunk(self) -> None:
        """Read the next chunk of the prompt being prefilled; after its last chunk, sample the
        first token and join the batch."""
        state = self._prefilling
        sequence, cache = state.sequence, state.cache
        if self._departed([sequence]):
            self._count_cancelled(sequence)
            self._prefilling = None
            return
        last = len(sequence.prompt_tokens) - 1
        if state.position < last:
            # All but the last token only fill the cache: their logits are never evaluated, so
            # MLX skips the output layer for them (the bulk of the work on a large vocabulary).
            # Chunks end at multiples of the chunk size, so disk cache blocks end where they do.
            end = min((state.position // PREFILL_CHUNK + 1) * PREFILL_CHUNK, last)
            self.model.prefill(sequence, state.position, end, cache)
            mx.eval([c.state for c in cache])
            if state.writer is not None:
                state.writer.add(cache, state.position, end)
            state.position = end
            self.prefill_chunks += 1
            self._chunks_since_decode += bool(self._active)  # streams waited on this chunk
            return
        self._prefilling = None
        mx.clear_cache()  # the prompt's chunk-sized buffers are not needed again soon
        self._sample([sequence], self.model.prefill(sequence, last, last + 1, cache)[:, -1, :])
        if sequence.finished:
            self._retire(sequence, list(cache))
            return
        self._join_batch([sequence], [type(c).merge([c]) for c in cache])
        # Kept now, not only when the reply ends: the same prompt waiting (the other choices of
        # a request with `n`) reads it from here; the reply's own entry replaces it later.
        self._prompt_cache.insert_cache(sequence.cache_model, sequence.prompt_key, list(cache))

    def _join_batch(self, sequences: list[Sequence], batch_cache: list) -> None:
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
        with self.profile.phase("graph"):
            inputs = mx.array([s.last_token for s in self._active])
            logits = self.model.decode(inputs[:, None], self._batch_cache, self._active)[:, -1, :]
        self._sample(self._active, logits)
        with self.profile.phase("retire"):
            self._retire_rows([row for row, s in enumerate(self._active) if s.finished])

    def _departed(self, sequences: list[Sequence]) -> list[int]:
        """The rows whose clients left."""
        return [row for row, sequence in enumerate(sequences) if sequence.cancelled.is_set()]

    def _sample(self, sequences: list[Sequence], logits: mx.array) -> None:
        """Each row's next token; the grammar masks are made while MLX computes the logits.
        A row whose own parameters or grammar fail ends alone, with its error."""
        profile = self.profile
        with profile.phase("compute"):  # on the CPU, MLX computes much of it here already
            mx.async_eval(logits)
        with profile.phase("masks"):
            masks = [_alone(s, s.next_mask) for s in sequences]
        with profile.phase("compute"):
            mx.eval(logits)
        with profile.phase("to_host"):
            logits = logits_as_numpy(logits)
        for row, sequence in enumerate(sequences):
            if not sequence.failed:
                with profile.phase("sample"):
                    token = _alone(sequence, sequence.sample, logits[row], masks[row])
                if token is not None:
                    with profile.phase("deliver"):
                        _alone(sequence, sequence.accept, token)
        self.tokens_sampled += len(sequences)

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
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if item is not None:
                item.emit(exc)


def _alone(sequence: Sequence, step, *args):
    """`step(*args)` for one sequence; its failure ends that sequence alone (None then)."""
    try:
        return step(*args)
    except Exception as exc:  # noqa: BLE001 - the request's own error, sent to its client
        log.info("a sequence ended with its own error: %s", exc)
        sequence.fail(exc)
        return None


@dataclass
class Prefill:
    """A prompt being read into its own cache, a chunk between two decode steps."""

    sequence: Sequence
    cache: list
    position: int  # the next prompt position to read
    writer: BlockWriter | None = None  # stores the prompt's whole blocks on disk
