"""Whether the llama.cpp child can enforce a grammar, asked before a request relies on it.

The child's llguidance is built into llama.cpp (the xllamacpp wheel) and may be older than the
Python llguidance that checked the grammar. A grammar it cannot compile is not refused: the
child logs "llg error" and samples as if there were no grammar. So each new grammar text is
first tried in a one-token request whose grammar forces a marker before it: the reply starts
with the marker only if the child compiled the whole grammar (unconstrained, the same greedy
request gives a first token chosen not to start with it). Answers are kept per grammar text.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable

KEPT_ANSWERS = 256
MARKERS = ("~", "^")  # the forced first text: whichever the unconstrained reply does not begin
LOG_WAITS = 5  # the child's log line may reach us just after its answer
LOG_WAIT_SECONDS = 0.05


class GrammarProbe:
    def __init__(
        self,
        complete: Callable[[dict], Awaitable[dict]],
        log_tail: Callable[[], str],
    ):
        self._complete = complete  # a non-streamed /completion request to the child
        self._log_tail = log_tail
        self._answers: OrderedDict[str, str] = OrderedDict()  # grammar text -> error or ""
        self._free_start: str | None = None

    async def error(self, lark: str) -> str | None:
        """Why the child cannot compile `lark` (as sent, without its %llguidance line), or None
        when it can."""
        if lark in self._answers:
            self._answers.move_to_end(lark)
            return self._answers[lark] or None
        marker = await self._marker()
        probe = _probe_grammar(lark, marker)
        if probe is None:
            return "the grammar has no start rule"
        log_before = self._log_tail()
        reply = await self._complete(_body(probe))
        compiled = reply.get("content", "").startswith(marker)
        answer = "" if compiled else await self._complaint(log_before)
        self._answers[lark] = answer
        while len(self._answers) > KEPT_ANSWERS:
            self._answers.popitem(last=False)
        return answer or None

    async def _marker(self) -> str:
        if self._free_start is None:
            self._free_start = (await self._complete(_body(None))).get("content", "")
        return next(m for m in MARKERS if not self._free_start.startswith(m))

    async def _complaint(self, log_before: str) -> str:
        """The child's own words about the grammar, from its log, where they can be found."""
        for _ in range(LOG_WAITS):
            tail = self._log_tail()
            new = tail[len(log_before) :] if tail.startswith(log_before) else tail
            found = [line for line in new.splitlines() if "llg error:" in line]
            if found:
                detail = found[-1].split("llg error:", 1)[1].strip()
                detail = re.sub(r"^at \d+\(\d+\): ", "", detail)  # a place in the probe
                return f"llama.cpp's llguidance cannot compile this grammar: {detail}"
            await asyncio.sleep(LOG_WAIT_SECONDS)
        return "llama.cpp's llguidance cannot compile this grammar (it would sample unconstrained)"


def _probe_grammar(lark: str, marker: str) -> str | None:
    """`lark` behind a forced marker: its start rule renamed and called after the marker."""
    renamed, found = re.subn(r"^start:", "probed_start:", lark, count=1, flags=re.MULTILINE)
    if not found:
        return None
    return f"start: {json.dumps(marker)} probed_start\n{renamed}"


def _body(grammar: str | None) -> dict:
    """One greedy token after token 0, the slot's cache left alone."""
    body = {"prompt": [0], "n_predict": 1, "temperature": 0, "top_k": 1, "cache_prompt": False}
    if grammar is not None:
        body["grammar"] = "%llguidance {}\n" + grammar
    return body
