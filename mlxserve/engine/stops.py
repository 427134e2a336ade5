"""Stop strings matched on text, across token boundaries, so a stop never reaches the client."""


class StopStringMatcher:
    """Feed text as it is generated; get back only text that can no longer start a stop string."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self._pending = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string found

    def feed(self, text: str) -> str:
        """Return the text that is safe to emit; after a stop is found, nothing more is emitted."""
        if self.stopped or not self.stops:
            return "" if self.stopped else text
        self._pending += text
        cut = self._earliest_stop()
        if cut is not None:
            safe, self._pending, self.stopped = self._pending[:cut], "", True
            return safe
        held = self._partial_suffix_length()
        safe = self._pending[: len(self._pending) - held]
        self._pending = self._pending[len(safe) :]
        return safe

    def flush(self) -> str:
        """Text held back as a possible stop prefix, released when generation ends."""
        rest, self._pending = self._pending, ""
        return "" if self.stopped else rest

    def _earliest_stop(self) -> int | None:
        hits = [(i, s) for s in self.stops if (i := self._pending.find(s)) >= 0]
        if not hits:
            return None
        cut, self.matched = min(hits)
        return cut

    def _partial_suffix_length(self) -> int:
        """Length of the longest tail of the pending text that begins some stop string."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self._pending)), longest, -1):
                if stop.startswith(self._pending[-n:]):
                    longest = n
                    break
        return longest
