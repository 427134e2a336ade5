"""How a runner reads new prompts: a burst of short ones together in one padded pass, a long one
a chunk between two decode steps from the longest prefix cached in memory or on disk, and each
sequence's first token sampled as its prompt ends, before it joins the decoding batch."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from mlxserve.engine.mlx.serving.disk_prompt_cache import BLOCK, BlockWriter, block_names
from mlxserve.engine.mlx.serving.sequence import Sequence

# Prompt tokens read between two decode steps: bounds memory, and how long a running stream
# waits for a new prompt (docs/engines.md has the measurement behind it).
PREFILL_CHUNK = 128


class PromptReading:
    """BatchRunner's prompt-reading steps; they run on its thread and use its state."""

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
        self._reading = len(group)  # counted as sequences while out of every list
        try:
            self._read_group(group)
        finally:
            self._reading = 0

    def _read_group(self, group: list[Sequence]) -> None:
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
        if self._disk_cache is not None and sequence.adapter is None:
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
        mx.clear_cache()  # the prompt's chunk-sized buffers are not needed again soon
        self._sample([sequence], self.model.prefill(sequence, last, last + 1, cache)[:, -1, :])
        if sequence.finished:
            self._prefilling = None
            self._retire(sequence, list(cache))
            return
        self._join_batch([sequence], [type(c).merge([c]) for c in cache])
        self._prefilling = None  # counted as prefilling until it holds its place in the batch
        # Kept now, not only when the reply ends: the same prompt waiting (the other choices of
        # a request with `n`) reads it from here; the reply's own entry replaces it later.
        self._prompt_cache.insert_cache(sequence.cache_model, sequence.prompt_key, list(cache))


@dataclass
class Prefill:
    """A prompt being read into its own cache, a chunk between two decode steps."""

    sequence: Sequence
    cache: list
    position: int  # the next prompt position to read
    writer: BlockWriter | None = None  # stores the prompt's whole blocks on disk
