"""How a runner chooses each decode step's tokens: rows that need nothing from the host on the
device, held ahead for the next step (device_sampling.py), the others by the C sampler on the
host, each row's failure its own."""

from __future__ import annotations

import logging

import mlx.core as mx

from mlxserve.engine.mlx.architectures.text_model import logits_as_numpy
from mlxserve.engine.mlx.serving.device_sampling import chosen_on_device, device_tokens
from mlxserve.engine.mlx.serving.sequence import Sequence

log = logging.getLogger(__name__)


class TokenChoice:
    """BatchRunner's token choice; it runs on its thread and uses its state."""

    def _ahead_ends_a_reply(self) -> bool:
        """Whether a token held ahead is its sequence's last by count."""
        return any(
            ahead and len(s.generated) + 1 >= s.max_tokens
            for s, ahead in zip(self._active, self._ahead.rows, strict=True)
        )

    def _choose(self, logits: mx.array) -> None:
        """This step's tokens: those of rows that need nothing from the host are chosen on the
        device and held for the next step, which can be built before they reach the host; the
        previous step's are taken meanwhile. The other rows are sampled on the host."""
        device = self.device_sampling
        on_device = [row for row, s in enumerate(self._active) if device and chosen_on_device(s)]
        chosen_rows = set(on_device)
        on_host = [row for row in range(len(self._active)) if row not in chosen_rows]
        if on_device:
            with self.profile.phase("graph"):
                rows = logits if not on_host else logits[mx.array(on_device)]
                sequences = [self._active[row] for row in on_device]
                read_rows = [self._ahead.rows[row] for row in on_device]
                read = self._ahead.tokens[mx.array(on_device)] if any(read_rows) else None
                chosen = device_tokens(rows, sequences, read, read_rows)
            with self.profile.phase("compute"):
                mx.async_eval(chosen)
        self._take_ahead(read=True)
        if on_host:
            rows = logits if not on_device else logits[mx.array(on_host)]
            self._sample([self._active[row] for row in on_host], rows)
        if on_device:
            self._ahead.hold(chosen, on_device, len(self._active))

    def _take_ahead(self, read: bool) -> None:
        """Give the tokens held ahead to their sequences; `read`: this step's graph read them
        already, so a sequence that ends with one has it in its cache."""
        with self.profile.phase("compute"):
            taken = self._ahead.take()
        for row, token in taken:
            sequence = self._active[row]
            sequence.last_token_read = read
            with self.profile.phase("deliver"):
                _alone(sequence, sequence.accept, token)
        self.tokens_sampled += len(taken)
        self.tokens_on_device += len(taken)

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


def _alone(sequence: Sequence, step, *args):
    """`step(*args)` for one sequence; its failure ends that sequence alone (None then)."""
    try:
        return step(*args)
    except Exception as exc:  # noqa: BLE001 - the request's own error, sent to its client
        log.info("a sequence ended with its own error: %s", exc)
        sequence.fail(exc)
        return None
