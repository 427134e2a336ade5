"""The runner of a distributed model, on rank 0 and on the others, kept in lock-step.

Rank 0 runs the usual runner: it admits requests, samples (grammars included) and decides
every step. Before each step that touches the model it tells the other ranks what it is about
to do ("start" a prompt, read a "chunk", read a "group" of short prompts, "decode" after dropping
the rows whose clients left), and after sampling it tells them the tokens and which sequences
ended ("sampled"). The other ranks run the same runner code on mirrored sequences, so each
rank's caches, batch rows and prompt cache stay the same as rank 0's, on its share of the model.

Left out in distributed mode: speculative decoding and the disk prompt cache. The prompt cache
in memory evicts by entry count on every rank, and by bytes only as rank 0 says ("trim"), so
every rank keeps the same entries.
"""

from __future__ import annotations

import logging
import queue

import mlx.core as mx
from mlx_lm.models.cache import LRUPromptCache

from mlxserve.engine.base import EngineUnavailable
from mlxserve.engine.mlx.distributed.control_channel import HEARTBEAT_SECONDS, Link, Session
from mlxserve.engine.mlx.serving.runner import PROMPT_CACHE_ENTRIES, BatchRunner
from mlxserve.engine.mlx.serving.sequence import BASE_CACHE_MODEL, Sequence

log = logging.getLogger(__name__)
FAILED_TOKEN = -1  # said for a sequence that failed alone on rank 0 instead of its token


class LeaderRunner(BatchRunner):
    """Rank 0: the runner that serves requests, saying each step to the other ranks."""

    def __init__(self, load_model, session: Session, **options):
        super().__init__(load_model, **options)
        self._session, self._link = session, session.link
        self.status = session.cluster.status()  # for /health and /api/v0
        self._cache_budget = self._prompt_cache.max_bytes
        self._prompt_cache = LRUPromptCache(PROMPT_CACHE_ENTRIES)
        self._left: list[int] = []  # the rows whose clients left, as this step told the others
        self._link.on_failure = self._fail_all

    def submit(self, sequence: Sequence) -> None:
        if self._link.failed:
            sequence.emit(EngineUnavailable("the distributed model stopped"))
            return
        super().submit(sequence)

    def _run(self) -> None:
        super()._run()
        if self.ready.exception() is None:  # the others loaded it too: they unload it now
            self._link.send("stop")
        self._session.model_id = None  # the group may load another model

    def _collect_new(self, block: bool) -> bool:
        """Waiting for requests, say so to the other ranks every so often."""
        if block and not self._waiting:
            self._link.pause()
            try:
                item = self._inbox.get(timeout=HEARTBEAT_SECONDS)
            except queue.Empty:
                self._link.send("heartbeat")
                return True
            if item is None:
                return False
            self._waiting.append(item)
        return super()._collect_new(block=False)

    def _drafter(self, sequence: Sequence):
        return None

    def _start_prefill(self, sequence: Sequence) -> None:
        self._link.queue("start", sequence.prompt_tokens)
        super()._start_prefill(sequence)

    def _prefill_group(self, group: list[Sequence]) -> None:
        self._link.send("group", [sequence.prompt_tokens for sequence in group])
        super()._prefill_group(group)

    def _prefill_chunk(self) -> None:
        self._left = super()._departed([self._prefilling.sequence])
        self._link.send("chunk", self._left)
        super()._prefill_chunk()

    def _decode_step(self) -> None:
        self._left = super()._departed(self._active)
        self._link.send("decode", self._left)
        super()._decode_step()

    def _departed(self, sequences: list[Sequence]) -> list[int]:
        return self._left  # read once, before the step was announced

    def _sample(self, sequences: list[Sequence], logits: mx.array) -> None:
        # Evaluated before the grammar masks, not beside them: a collective that fails in an
        # asynchronous evaluation never raises, and the step would wait for ever.
        mx.eval(logits)
        super()._sample(sequences, logits)
        # A sequence that failed alone sampled nothing: FAILED_TOKEN tells the others so.
        tokens = [FAILED_TOKEN if s.failed else s.last_token for s in sequences]
        self._link.send("sampled", tokens, [sequence.finished for sequence in sequences])

    def _guarded(self, step, sequences: list[Sequence], *args) -> None:
        super()._guarded(step, sequences, *args)
        if self._prompt_cache.nbytes > self._cache_budget:
            self._prompt_cache.trim_to(n_bytes=self._cache_budget)
            self._link.queue("trim", len(self._prompt_cache))

    def _step_failed(self, step, sequences: list[Sequence], exc: Exception) -> None:
        """Every rank drops all it holds in flight: the others cannot know how far this step
        went here."""
        self._link.check(exc)  # first: if a rank is gone, every request gets that 503
        self._link.send("failed")
        log.exception("generation step failed")
        prefilling = [self._prefilling.sequence] if self._prefilling else []
        for sequence in {id(s): s for s in [*sequences, *self._active, *prefilling]}.values():
            sequence.emit(exc)
        self._active, self._batch_cache, self._prefilling = [], None, None


class LeaderStepFailed(Exception):
    """Rank 0 failed the step this rank is in."""


class FollowerRunner(BatchRunner):
    """Another rank: the runner's steps as rank 0 announces them, on mirrored sequences."""

    def __init__(self, load_model, link: Link):
        super().__init__(load_model, prompt_cache_bytes=1 << 62)  # rank 0 says what to evict
        self._link = link
        self._left: list[int] = []

    def follow(self) -> None:
        """Load, then run rank 0's steps until it unloads the model."""
        if not self._load():
            self._link.fail(f"could not load the model: {self.ready.exception()}")
        while True:
            for kind, *args in self._link.receive():
                if kind == "stop":
                    self._link.pause()
                    return
                self._apply(kind, args)
            if not self._active and self._prefilling is None:
                mx.clear_cache()

    def _apply(self, kind: str, args: list) -> None:
        if kind == "start":
            mirror = MirroredSequence(args[0])
            self._guarded(self._start_prefill, [mirror], mirror)
        elif kind == "group":
            mirrors = [MirroredSequence(prompt) for prompt in args[0]]
            self._guarded(self._prefill_group, mirrors, mirrors)
        elif kind in ("chunk", "decode"):
            self._left = args[0]
            step = self._prefill_chunk if kind == "chunk" else self._decode_step
            self._guarded(step, [])
        elif kind == "trim":
            self._prompt_cache.trim_to(n_sequences=args[0])
        elif kind == "failed":
            self._drop_all()
        elif kind != "heartbeat":
            self._link.fail(f"out of step with rank 0: it said {kind!r} between steps")

    def _prepare(self, sequence) -> None:
        pass  # nothing is sampled here

    def _drafter(self, sequence):
        return None

    def _departed(self, sequences) -> list[int]:
        return self._left

    def _sample(self, sequences, logits: mx.array) -> None:
        """Take part in computing the logits; rank 0 says which tokens it chose."""
        mx.eval(logits)
        message = self._link.receive()
        kind, *args = message[0]
        if kind == "failed" and len(message) == 1:
            raise LeaderStepFailed
        if kind != "sampled" or len(message) != 1 or len(args[0]) != len(sequences):
            self._link.fail(f"out of step with rank 0: it said {message!r} after a step")
        tokens, finished = args
        for sequence, token, ended in zip(sequences, tokens, finished, strict=True):
            sequence.take(token, ended)

    def _step_failed(self, step, sequences, exc: Exception) -> None:
        if not isinstance(exc, LeaderStepFailed):  # this rank alone: it cannot keep in step
            self._link.check(exc)
            self._link.fail(f"rank {self._link.cluster.rank} failed a step: {exc!r}")
        self._drop_all()

    def _drop_all(self) -> None:
        self._active, self._batch_cache, self._prefilling = [], None, None


class MirroredSequence:
    """A sequence as another rank knows it: the tokens that fill its cache, and rank 0's word
    on when it ends."""

    drafter = None
    tokens_after_cancel = 0
    cached_prompt_tokens = 0
    adapter = None  # a model split across machines serves no adapters
    cache_model = BASE_CACHE_MODEL

    def __init__(self, prompt_tokens: list[int]):
        self.prompt_tokens = self.prompt_key = prompt_tokens
        self.generated: list[int] = []
        self.finished = self.failed = False

    def take(self, token: int, ended: bool) -> None:
        """Rank 0's token (FAILED_TOKEN: the sequence failed alone there, and ends here too)."""
        self.failed = token == FAILED_TOKEN
        if not self.failed:
            self.generated.append(token)
        self.finished = ended

    @property
    def last_token(self) -> int:
        return self.generated[-1]

    @property
    def processed_key(self) -> list[int]:
        return self.prompt_key + self.generated[:-1]

    def emit(self, event) -> None:
        pass  # no client here

    def finish(self) -> None:
        pass
