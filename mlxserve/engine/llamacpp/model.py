"""The llama.cpp engine: a GGUF model served by a llama.cpp server child, reached over HTTP.

mlxserve applies chat templates itself, so requests go to llama.cpp's raw /completion endpoint as
token ids (tokenized by the same server), which keeps `prompt_tokens` exactly what it evaluated.
If the child dies, requests in flight fail with EngineUnavailable and the next request restarts it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from importlib import metadata
from pathlib import Path

import numpy as np

from mlxserve.engine.base import (
    IMAGE_MARKER,
    PROMPT_CACHE_BYTES,
    EngineError,
    EngineModel,
    EngineRequest,
    EngineUnavailable,
    GenerationEvent,
    Grammar,
    InvalidRequest,
    PairScores,
    RelevanceJob,
)
from mlxserve.engine.kv_quantization import llamacpp_cache_args
from mlxserve.engine.llamacpp import client, protocol
from mlxserve.engine.llamacpp.cross_encoder import score_pairs_on_child
from mlxserve.engine.llamacpp.embedding import fit_to_window
from mlxserve.engine.llamacpp.grammar_check import GrammarProbe
from mlxserve.engine.llamacpp.jump_forward import ExactTokens, planned_jump
from mlxserve.engine.llamacpp.lora import ChildAdapters
from mlxserve.engine.llamacpp.process import LlamaServerProcess
from mlxserve.engine.llamacpp.relevance import score_on_child
from mlxserve.gguf_header import read_scalar_fields

logger = logging.getLogger("mlxserve.llamacpp")
SAMPLED_METRIC = re.compile(r"^llamacpp:tokens_predicted_total (\S+)$", re.MULTILINE)


def embedding_args(context_length: int, pooling: str) -> tuple[str, ...]:
    # An embedding input (or a reranker's pair) must fit one batch: the batch spans the context.
    size = str(context_length)
    return ("--embedding", "--pooling", pooling, "--batch-size", size, "--ubatch-size", size)


class ChildStopped(EngineUnavailable):
    """The llama.cpp child died while answering; the next call starts a new one."""


class LlamaCppModel(EngineModel):
    engine_name = "llama.cpp"
    grammar_may_lapse = True  # the child samples freely once its grammar has no token left
    end_tokens: tuple[int, ...] = ()  # the GGUF's end-of-generation tokens, which end grammars

    def __init__(self, process: LlamaServerProcess, model_id: str, context_length: int):
        self.process = process
        self.model_id = model_id
        self.context_length = context_length
        self.parallel = process.parallel
        self._restart_lock = asyncio.Lock()
        self._closed = False
        self._version = ""
        self._grammar_error: str | None = None  # "" once grammars are known to work
        self._grammars = GrammarProbe(self._probe_completion, process.log_tail)
        plain = functools.partial(self.tokenize, add_special_tokens=False, parse_special=False)
        self._openings = ExactTokens(plain, self.detokenize)
        self._media_marker = ""  # where an image goes in a prompt (random per llama.cpp start)
        # Requests beyond the child's slots wait here, where a client that leaves is dropped at
        # once; in llama.cpp's own queue they would still be read when a slot came free.
        self._slots = asyncio.Semaphore(self.parallel)
        self.adapters = ChildAdapters()

    @classmethod
    async def load(
        cls,
        model_id: str,
        gguf_path: Path,
        context_length: int,
        *,
        server_binary: Path | None = None,
        parallel: int = 4,
        embedding: bool = False,
        pooling: str = "mean",
        prompt_cache_bytes: int = PROMPT_CACHE_BYTES,
        mmproj: Path | None = None,
        prompt_lookup: bool = False,
        draft: tuple[str, Path] | None = None,
        kv_bits: int | None = None,
        adapters: ChildAdapters | None = None,
    ) -> LlamaCppModel:
        """Start a llama.cpp server for a GGUF file; `embedding` serves /v1/embeddings
        (mean pooling) instead of completions; `mmproj`, a vision model's projector, lets
        prompts hold images; `prompt_lookup` makes every request decode speculatively with
        llama.cpp's n-gram drafts, `draft` (id, GGUF path) with a draft model instead (llama.cpp
        sets speculation per server, not per request); `kv_bits` (8 or 4) quantizes its KV cache
        (q8_0 or q4_0, with flash attention, which a quantized V cache needs); `adapters`, the
        GGUF LoRA files the child holds (each applied only to the requests that name it) and
        why the others are refused."""
        extra_args = embedding_args(context_length, pooling) if embedding else ()
        if mmproj is not None:
            extra_args = ("--mmproj", str(mmproj))
        draft = None if embedding else draft
        if draft is not None:
            extra_args = (
                *extra_args,
                "--model-draft",
                str(draft[1]),
                "--spec-type",
                "draft-simple",
            )
        elif prompt_lookup and not embedding:
            extra_args = (*extra_args, "--spec-type", "ngram-simple")
        if kv_bits and not embedding:
            extra_args = (*extra_args, *llamacpp_cache_args(kv_bits))
        adapters = None if embedding else adapters
        if adapters is not None:
            extra_args = (*extra_args, *adapters.server_args())
        process = LlamaServerProcess(
            gguf_path,
            context_length=context_length,
            server_binary=server_binary,
            extra_args=extra_args,
            parallel=parallel,
            prompt_cache_bytes=prompt_cache_bytes,
            api_key=secrets.token_urlsafe(24),
        )
        await asyncio.to_thread(process.start)
        model = cls(process, model_id, process.context_length)
        model.vision = mmproj is not None
        model.draft_model = draft[0] if draft is not None else None
        model.kv_bits = None if embedding else kv_bits
        model.adapters = adapters or ChildAdapters()
        try:
            await model._read_model_info()
        except BaseException:
            await model.close()
            raise
        return model

    async def _read_model_info(self) -> None:
        props = await self._request("GET", "/props")
        models = await self._request("GET", "/v1/models")
        fields = await asyncio.to_thread(read_scalar_fields, self.process.model_path)
        self.bos_token = props.get("bos_token") or ""
        self.eos_token = props.get("eos_token") or ""
        # /props reports llama.cpp's fallback template; only the file's own template counts.
        self.chat_template = fields.get("tokenizer.chat_template")
        meta = (models.get("data") or [{}])[0].get("meta") or {}
        self.vocab_size = meta.get("n_vocab")
        self.end_tokens = protocol.end_tokens(fields, self.vocab_size)
        self._version = self._engine_version(props.get("build_info", ""))
        self.vision = bool((props.get("modalities") or {}).get("vision"))
        self._media_marker = props.get("media_marker") or ""

    def _engine_version(self, build_info: str) -> str:
        if self.process.server_binary is None:
            return f"xllamacpp {metadata.version('xllamacpp')}"
        return build_info

    async def tokenize(
        self, text: str, *, add_special_tokens: bool = True, parse_special: bool = True
    ) -> list[int]:
        """`parse_special=False` spells special tokens' text as text, as grammars do."""
        body = {"content": text, "add_special": add_special_tokens, "parse_special": parse_special}
        return (await self._request("POST", "/tokenize", body))["tokens"]

    async def detokenize(self, tokens: list[int]) -> str:
        return (await self._request("POST", "/detokenize", {"tokens": tokens}))["content"]

    async def embed(self, inputs: list[str] | list[list[int]]) -> tuple[np.ndarray, int]:
        """Mean-pooled, unit-length vectors and the number of tokens read; needs a model loaded
        with embedding=True. Inputs past the window are cut to fit."""
        fitted = await asyncio.gather(*(fit_to_window(self, item) for item in inputs))
        try:
            response = await self._request("POST", "/v1/embeddings", {"input": fitted})
        except InvalidRequest as exc:  # token ids outside the vocabulary
            raise InvalidRequest(str(exc), "input") from exc
        rows = sorted(response["data"], key=lambda d: d["index"])
        vectors = np.array([row["embedding"] for row in rows], dtype=np.float32)
        return vectors, response["usage"]["prompt_tokens"]

    async def prompt_and_budget(self, request: EngineRequest) -> tuple[list[int], int]:
        """As for any engine; with images the budget counts the text's tokens (llama.cpp counts
        each image's own, and they are in the final usage)."""
        if request.images and request.prompt_tokens is None:
            text = request.prompt.replace(IMAGE_MARKER, "")
            request.prompt_tokens = await self.tokenize(
                text, add_special_tokens=request.add_special_tokens
            )
        return await super().prompt_and_budget(request)

    async def generate(self, request: EngineRequest) -> AsyncIterator[GenerationEvent]:
        """Relay one /completion stream; leaving early closes the connection, which makes
        llama.cpp release the slot at its next token."""
        prompt, n_predict = await self.prompt_and_budget(request)
        if request.images:  # llama.cpp reads images only beside a text prompt
            prompt = await asyncio.to_thread(
                protocol.multimodal_prompt, request.prompt, request.images, self._media_marker
            )
        visible = await self.special_ids(request.visible_specials)
        grammar = request.grammar
        jump = await planned_jump(request, n_predict, visible, self._openings)
        if jump is not None:
            prompt, grammar = prompt + jump.tokens, jump.rest
            n_predict -= len(jump.tokens)
        body = protocol.completion_body(
            prompt,
            request.sampling,
            n_predict,
            request.stop,
            grammar,
            self.end_tokens,
            request.top_logprobs,
        )
        if self.adapters.usable:
            body["lora"] = self.adapters.request_field(request.adapter)
        async with self._slots, aclosing(self._relay(request, body, visible)) as events:
            first = True
            async for event in events:
                yield event if jump is None else jump.onto(event, first)
                first = False

    async def _relay(self, request: EngineRequest, body: dict, visible: dict[int, str]):
        url = f"{await self._running_url()}/completion"
        first_token = last_token = None
        async with self._engine_errors():
            stream = client.post_event_stream(url, body, self.process.api_key)
            async with aclosing(stream) as chunks:
                async for chunk in chunks:
                    if "error" in chunk:
                        raise EngineError(f"llama.cpp: {protocol.error_message(chunk)}")
                    now = time.perf_counter()
                    if chunk.get("tokens") or chunk.get("content"):
                        first_token = first_token or now
                        last_token = now
                    if chunk.get("stop"):
                        first_token = first_token or now
                        stats = protocol.final_stats(
                            chunk,
                            body["n_predict"],
                            time_to_first_token=first_token - request.arrived,
                            generation_time=(last_token or first_token) - first_token,
                        )
                        stats.draft_model = self.draft_model if stats.draft else None
                        yield protocol.chunk_event(chunk, visible, request.top_logprobs, stats)
                        return
                    yield protocol.chunk_event(chunk, visible, request.top_logprobs)
        raise await self._unavailable(None)

    async def load_adapter(self, name: str, directory: Path) -> int:
        """The child started with every adapter then stored beside the model; its bytes."""
        return self.adapters.served(name, self.model_id).nbytes

    async def unload_adapter(self, name: str) -> None:
        """llama.cpp keeps an adapter's matrices until its server stops: nothing to free."""

    @property
    def child_pid(self) -> int | None:
        return self.process.pid if self.process.is_alive() else None

    async def engine_counters(self) -> dict[str, int]:
        """The child's own counts: `sequences` it is processing now, and `tokens_sampled`, every
        token it has sampled (llama.cpp's tokens_predicted_total, as for the MLX runner)."""
        if not self.process.is_ready():
            return {}  # reporting must not restart it
        try:
            slots = await self._request_once("GET", "/slots", None)
            async with self._engine_errors():
                url = f"{await self._running_url()}/metrics"
                metrics = await client.request_text("GET", url, self.process.api_key)
        except EngineError:
            return {}
        counters = {"sequences": sum(bool(slot.get("is_processing")) for slot in slots)}
        if sampled := SAMPLED_METRIC.search(metrics):
            counters["tokens_sampled"] = int(float(sampled.group(1)))
        return counters

    async def grammar_support_error(self, grammar: Grammar | None = None) -> str | None:
        """llama.cpp takes llguidance grammars only when built with it (xllamacpp is; a
        `--llama-server` binary may not be): asked once, with a one-token request. A grammar
        its llguidance cannot compile would be ignored, so each new one is tried first."""
        if self._grammar_error is None:
            body = {"prompt": [0], "n_predict": 1, "grammar": '%llguidance {}\nstart: "a"'}
            try:
                await self._request("POST", "/completion", body)
            except InvalidRequest as exc:
                self._grammar_error = (
                    f"this llama.cpp server cannot enforce grammars (build it with "
                    f"-DLLAMA_LLGUIDANCE=ON, or use the bundled xllamacpp): {exc}"
                )
            else:
                await self._check_end_tokens()
                self._grammar_error = ""
        if self._grammar_error or grammar is None:
            return self._grammar_error or None
        lark = protocol.ending_with(grammar.lark, self.end_tokens)  # the text generate sends
        try:
            return await self._grammars.error(lark)
        except InvalidRequest as exc:
            return f"llama.cpp refused the grammar: {exc}"

    async def _check_end_tokens(self) -> None:
        """Grammars name the model's end tokens by id (`<[1]>`, protocol.ending_with); an
        llguidance too old to read that would ignore every grammar, so then they go without."""
        if not self.end_tokens:
            return
        probe = protocol.ending_with('start: "a"\n', self.end_tokens)
        try:
            error = await self._grammars.error(probe)
        except InvalidRequest as exc:
            error = str(exc)
        if error:
            logger.warning(
                "this llama.cpp's llguidance cannot name tokens by id: grammars end only at "
                "its own end token"
            )
            self.end_tokens = ()

    async def score_pairs(self, query: str, documents: list[str]) -> PairScores:
        """A GGUF cross-encoder's scores (its child started with rank pooling)."""
        return await score_pairs_on_child(self, query, documents)

    async def score_relevance(self, job: RelevanceJob) -> np.ndarray:
        """P(yes) of each continuation (pipeline/rerank.py), a document per slot."""
        return await score_on_child(self._probe_completion, job)

    async def _probe_completion(self, body: dict) -> dict:
        async with self._slots:  # a slot of its own, like any request
            return await self._request("POST", "/completion", body)

    async def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One JSON call; these calls change nothing in the child, so one that the child's death
        cut off is made again to its successor."""
        try:
            return await self._request_once(method, path, body)
        except ChildStopped:
            return await self._request_once(method, path, body)

    async def _request_once(self, method: str, path: str, body: dict | None) -> dict:
        base_url = await self._running_url()
        async with self._engine_errors():
            return await client.request_json(
                method, f"{base_url}{path}", body, self.process.api_key
            )

    @asynccontextmanager
    async def _engine_errors(self) -> AsyncIterator[None]:
        """llama.cpp's error answers and lost connections, as the engine errors the API maps."""
        try:
            yield
        except client.HTTPStatusError as exc:
            raise self._http_error(exc) from exc
        except OSError as exc:
            raise await self._unavailable(exc) from exc

    async def _running_url(self) -> str:
        """The child's URL, restarting it first if it has died (once, however many callers)."""
        if self._closed:
            raise EngineUnavailable(f"model '{self.model_id}' has been unloaded")
        if not self.process.is_ready():
            async with self._restart_lock:
                if not self.process.is_ready():
                    logger.warning(
                        "llama.cpp for '%s' (pid %s) is not running; restarting it",
                        self.model_id,
                        self.process.pid,
                    )
                    try:
                        await asyncio.to_thread(self.process.start)
                    except Exception as exc:
                        raise EngineUnavailable(f"llama.cpp could not restart: {exc}") from exc
        return self.process.base_url

    async def _unavailable(self, exc: Exception | None) -> EngineUnavailable:
        """The error for a lost connection: ChildStopped when the child has died."""
        pid = self.process.pid
        if self._closed:
            return EngineUnavailable(f"model '{self.model_id}' was unloaded during the request")
        if not await self._still_alive():
            logger.warning(
                "llama.cpp (pid %s) died during a request; its last lines:\n%s",
                pid,
                self.process.log_tail(),
            )
            return ChildStopped(
                f"the llama.cpp server (pid {pid}) stopped during the request; "
                "it restarts on the next request"
            )
        detail = f": {exc!r}" if exc is not None else ": the stream ended without a final chunk"
        return EngineUnavailable(f"lost the connection to the llama.cpp server (pid {pid}){detail}")

    async def _still_alive(self, grace: float = 0.5) -> bool:
        """A broken stream often arrives just before the child's exit is visible: give it a
        moment, so a crash is reported as one (this runs only on the error path)."""
        deadline = time.monotonic() + grace
        while self.process.is_alive():
            if time.monotonic() > deadline:
                return True
            await asyncio.sleep(0.02)
        return False

    def _http_error(self, exc: client.HTTPStatusError) -> EngineError:
        status, text = exc.status, exc.body.decode("utf-8", "replace")
        try:
            message = f"llama.cpp: {protocol.error_message(json.loads(text))}"
        except ValueError:
            message = f"llama.cpp answered {status}: {text[:500]}"
        if status == 503:
            return EngineUnavailable(message)
        if status in (400, 422):
            return InvalidRequest(message)
        return EngineError(message)

    async def close(self) -> None:
        self._closed = True
        await asyncio.to_thread(self.process.stop)

    def runtime_info(self) -> dict:
        return {"name": "llama.cpp", "version": self._version, "supported_formats": ["gguf"]}
