"""The tool loop that lets a model use MCP servers within one request: generate; when the reply
calls MCP tools, call their servers and add the calls and results to the conversation; generate
again, until the model answers without an MCP call, calls a tool the client runs, asks for a
call that needs the client's approval, or a limit is reached. Adapters render every round as
one response: the rounds' output events, the calls as they run, and one Finished with the
rounds' figures added up.

Limits: at most `max_rounds` rounds of calls (MAX_TOOL_ROUNDS), after which one last round
offers no tools, so the model answers; the request's max_tokens holds for all rounds together;
each call has the server's time limit and a cap on its output (servers.py); --request-timeout
holds for the whole loop, its calls included, from the deadline the route set before it reached
the request's MCP servers."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from dataclasses import dataclass

from mlxserve.engine.base import GenerationStats
from mlxserve.families.calls import ToolCall
from mlxserve.mcp.servers import INVALID_PARAMS, CallOutcome, protocol_error
from mlxserve.mcp.tools import McpTool, McpToolbox
from mlxserve.models.registry import ModelRegistry
from mlxserve.pipeline.deadline import until_deadline
from mlxserve.pipeline.events import Completion, Finished, OutputEvent
from mlxserve.pipeline.generate import generate
from mlxserve.pipeline.prepare import Prepared, ServerLimits, prepare
from mlxserve.pipeline.request import GenerateRequest, TextPart, ToolCallPart, ToolResultPart, Turn

MAX_TOOL_ROUNDS = 8  # generations that end in MCP calls, per request


@dataclass(frozen=True)
class McpCallStarted:
    call: ToolCall
    tool: McpTool
    approval_request_id: str | None = None  # set when the client approved the call earlier


@dataclass(frozen=True)
class McpCallFinished:
    call: ToolCall
    tool: McpTool
    outcome: CallOutcome
    approval_request_id: str | None = None


LoopEvent = OutputEvent | McpCallStarted | McpCallFinished


@dataclass(frozen=True)
class ApprovedCall:
    """A call the client approved after an earlier response asked: it runs first."""

    call: ToolCall
    tool: McpTool
    approval_request_id: str


async def start_tool_loop(
    registry: ModelRegistry,
    limits: ServerLimits,
    request: GenerateRequest,
    toolbox: McpToolbox | None = None,
    *,
    deadline: float | None,
    approved: Iterable[ApprovedCall] = (),
    max_rounds: int = MAX_TOOL_ROUNDS,
    max_calls: int | None = None,
) -> ToolLoop:
    """Approved calls run and the first round is prepared, so refusals come before any response
    starts; then iterate the loop's events(). `deadline`: the event loop's time at which the
    request stops (None: no limit)."""
    loop = ToolLoop(registry, limits, request, toolbox, max_rounds, max_calls, deadline)
    for approval in approved:
        loop.done_before.append(await loop.run(approval.call, approval.tool, approval))
    await loop.prepare_round()
    return loop


@dataclass
class ToolLoop:
    registry: ModelRegistry
    limits: ServerLimits
    request: GenerateRequest
    toolbox: McpToolbox | None
    max_rounds: int
    max_calls: int | None
    deadline: float | None
    prepared: Prepared | None = None  # the next round's
    done_before: list[McpCallFinished] = dataclasses.field(default_factory=list)
    calls_made: int = 0
    rounds: list[GenerationStats] = dataclasses.field(default_factory=list)
    conversation: list[Turn] = dataclasses.field(init=False)  # grows with each round's calls

    def __post_init__(self):
        self.conversation = list(self.request.conversation)

    async def events(self) -> AsyncIterator[LoopEvent]:
        """Every round's events, then one Finished; the request's MCP servers are left at the
        end, however it ends."""
        try:
            async for event in self._rounds():
                yield event
        finally:
            if self.toolbox is not None:
                await self.toolbox.close()

    async def _rounds(self) -> AsyncIterator[LoopEvent]:
        for finished in self.done_before:
            yield McpCallStarted(finished.call, finished.tool, finished.approval_request_id)
            yield finished
        while True:
            completion = Completion()
            async with aclosing(generate(self.prepared)) as outputs:
                async for output in outputs:
                    completion.add(output)
                    if not isinstance(output, Finished):
                        yield output
            self.rounds.append(completion.stats)
            runnable, more = self._runnable(completion)
            self.conversation.append(_reply_turn(completion))
            for call, tool in runnable:
                yield McpCallStarted(call, tool)
                yield await self.run(call, tool)
            if not (runnable and more and self._tokens_left() != 0):
                break
            await self.prepare_round()
        yield Finished(completion.finish_reason, self._stats(exhausted=bool(runnable and more)))

    async def run(
        self, call: ToolCall, tool: McpTool, approval: ApprovedCall | None = None
    ) -> McpCallFinished:
        """Call the tool; its call and result join the conversation."""
        self.calls_made += 1
        try:
            arguments = json.loads(call.arguments or "{}")
        except json.JSONDecodeError:
            arguments = None
        if isinstance(arguments, dict):
            async with until_deadline(self.deadline, self.limits.request_timeout):
                outcome = await tool.connection.call(tool.name, arguments)
        else:
            outcome = protocol_error(INVALID_PARAMS, "the arguments are not a JSON object")
        if approval is not None:  # the call was made by an earlier reply, not shown again
            self.conversation.append(Turn("assistant", [_call_part(call)]))
        self.conversation.append(Turn("tool", [ToolResultPart(call.id, outcome.text)]))
        request_id = approval.approval_request_id if approval else None
        return McpCallFinished(call, tool, outcome, request_id)

    async def prepare_round(self) -> None:
        """The next round prepared; the request's time limit holds for all rounds together."""
        self.prepared = await prepare(self.registry, self.round_request(), self.limits)
        self.prepared.deadline = self.deadline

    def round_request(self) -> GenerateRequest:
        """The next round: the conversation so far, within what is left of max_tokens. After
        the first round a call is no longer forced; past the limits, no tool is offered."""
        request, constraints = self.request, self.request.constraints
        if self.rounds:
            spent = len(self.rounds) >= self.max_rounds or self._calls_exhausted()
            choice = "none" if spent or constraints.tool_choice == "none" else "auto"
            constraints = dataclasses.replace(constraints, tool_choice=choice, forced_tool=None)
        return dataclasses.replace(
            request,
            conversation=self.conversation,
            constraints=constraints,
            max_tokens=self._tokens_left(),
        )

    def _runnable(self, completion: Completion) -> tuple[list[tuple[ToolCall, McpTool]], bool]:
        """The reply's MCP calls to make now, and whether the loop may go on after them: not
        when the reply was cut, calls a tool the client runs, waits for an approval, or asks
        for more calls than max_calls allows."""
        if completion.finish_reason == "length" or not completion.tool_calls:
            return [], False
        toolbox = self.toolbox
        tools = [toolbox and toolbox.get(call.name) for call in completion.tool_calls]
        runnable = [
            (call, tool)
            for call, tool in zip(completion.tool_calls, tools, strict=True)
            if tool is not None and not tool.needs_approval
        ]
        more = len(runnable) == len(completion.tool_calls)
        room = None if self.max_calls is None else max(self.max_calls - self.calls_made, 0)
        if room is not None and len(runnable) > room:  # past max_tool_calls: not made
            runnable, more = runnable[:room], False
        return runnable, more

    def _calls_exhausted(self) -> bool:
        return self.max_calls is not None and self.calls_made >= self.max_calls

    def _tokens_left(self) -> int | None:
        if self.request.max_tokens is None:
            return None
        return max(self.request.max_tokens - sum(s.completion_tokens for s in self.rounds), 0)

    def _stats(self, exhausted: bool) -> GenerationStats:
        """The rounds' figures added up; a loop that had to stop mid-way (out of tokens) ended
        as a reply cut by max_tokens does."""
        last = self.rounds[-1]
        if len(self.rounds) == 1 and not exhausted:
            return last
        return dataclasses.replace(
            last,
            prompt_tokens=sum(s.prompt_tokens for s in self.rounds),
            completion_tokens=sum(s.completion_tokens for s in self.rounds),
            cached_prompt_tokens=sum(s.cached_prompt_tokens for s in self.rounds),
            reasoning_tokens=sum(s.reasoning_tokens for s in self.rounds),
            time_to_first_token=self.rounds[0].time_to_first_token,
            generation_time=sum(s.generation_time for s in self.rounds),
            stop_reason="maxPredictedTokensReached" if exhausted else last.stop_reason,
        )


def _call_part(call: ToolCall) -> ToolCallPart:
    return ToolCallPart(call.id, call.name, call.arguments)


def _reply_turn(completion: Completion) -> Turn:
    parts = [TextPart(completion.content)] if completion.content else []
    return Turn("assistant", parts + [_call_part(call) for call in completion.tool_calls])
