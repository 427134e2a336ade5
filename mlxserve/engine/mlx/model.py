"""The MLX engine: a loaded model served by its own runner thread."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlxserve.engine.base import (
    PROMPT_CACHE_BYTES,
    EngineError,
    EngineModel,
    EngineRequest,
    GenerationEvent,
    InvalidRequest,
    RelevanceJob,
    TokenLogprob,
    Unsupported,
    config_vocab_size,
)
from mlxserve.engine.jump import JumpForward, may_jump, writes_what_it_may_not
from mlxserve.engine.kv_quantization import KVQuantization
from mlxserve.engine.mlx.adapters import AdapterBank, AdapterError
from mlxserve.engine.mlx.architectures.text_model import TextModel
from mlxserve.engine.mlx.architectures.vision import VisionLanguageModel, is_vision_model
from mlxserve.engine.mlx.distributed.lockstep_runners import LeaderRunner
from mlxserve.engine.mlx.relevance import RelevanceScorer, score_batches
from mlxserve.engine.mlx.serving.constrained_sampling import GrammarCompiler, OutputConstraint
from mlxserve.engine.mlx.serving.detokenizer import IncrementalDetokenizer
from mlxserve.engine.mlx.serving.device_sampling import samples_on_device
from mlxserve.engine.mlx.serving.disk_prompt_cache import DiskPromptCache
from mlxserve.engine.mlx.serving.event_handoff import EventHandoff
from mlxserve.engine.mlx.serving.prompt_scoring import score_prompt
from mlxserve.engine.mlx.serving.runner import BatchRunner
from mlxserve.engine.mlx.serving.sequence import Sequence
from mlxserve.engine.mlx.serving.step_profile import StepProfile
from mlxserve.engine.mlx.tokenizer import load_tokenizer
from mlxserve.sampling.sampler import Sampler

log = logging.getLogger(__name__)


class MLXModel(EngineModel):
    engine_name = "mlx"

    def __init__(self, runner: BatchRunner, tokenizer, config: dict, context_length: int):
        self._runner = runner
        self.tokenizer = tokenizer
        self.vocab_size = config_vocab_size(config)
        self.vision = isinstance(runner.model, VisionLanguageModel)
        self.context_length = context_length
        self.parallel = runner.max_batch_size
        self.eos_token_ids = frozenset(tokenizer.eos_token_ids)
        self.chat_template = tokenizer.chat_template
        self.bos_token = tokenizer.bos_token or ""
        self.eos_token = tokenizer.eos_token or ""
        self._grammars: GrammarCompiler | None = None  # made by the first constrained request
        self._adapter_loads: dict[str, int] = {}  # loaded adapters, each with its load's number
        self._adapter_load_count = 0
        # The group's mode, backend and ranks when the model is split across processes.
        self.distributed = runner.status if isinstance(runner, LeaderRunner) else None

    @classmethod
    async def load(
        cls,
        path: Path,
        context_length: int,
        *,
        max_batch_size: int = 8,
        prompt_cache_bytes: int = PROMPT_CACHE_BYTES,
        prompt_lookup: bool = False,
        sample_on: str = "auto",
        disk_cache: DiskPromptCache | None = None,
        kv_budget_tokens: int | None = None,
        shard_as: str | None = None,
        profile: StepProfile | None = None,
        kv_quantization: KVQuantization | None = None,
    ) -> MLXModel:
        """Load an MLX model directory; `context_length` is decided by the caller's policy.
        `shard_as`: the model's id, under which every rank of a distributed server (`mlxserve
        serve --distributed`) loads its part; this process serves as rank 0. `profile`: where
        the decode steps' timings go (scripts/bench.py profile). `kv_quantization`: keys and values
        kept at that many bits (a text model's full-context layers; None: full precision).
        `sample_on`: auto, device or host (serving/device_sampling.py)."""
        config = json.loads((path / "config.json").read_text())
        if shard_as is None:
            load = functools.partial(_load_weights, path, config, kv_quantization)
            runner = BatchRunner(
                load,
                max_batch_size,
                prompt_cache_bytes,
                prompt_lookup,
                disk_cache,
                kv_budget_tokens,
                profile,
                samples_on_device(sample_on),
            )
        else:
            from mlxserve.engine.mlx.distributed.ranks import leader_runner

            runner = leader_runner(
                path,
                shard_as,
                max_batch_size=max_batch_size,
                prompt_cache_bytes=prompt_cache_bytes,
                kv_budget_tokens=kv_budget_tokens,
            )
        model, tokenizer = await asyncio.wrap_future(runner.start())
        loaded = cls(runner, tokenizer, config, context_length)
        if isinstance(model, TextModel) and model.kv_quantization is not None:
            loaded.kv_bits = model.kv_quantization.bits
        return loaded

    @property
    def prompt_cache_bytes(self) -> int:
        return self._runner.prompt_cache_bytes

    @property
    def active_sequences(self) -> int:
        return self._runner.active_count

    async def engine_counters(self) -> dict[str, int]:
        return {**self._runner.counters(), "prompt_cache_bytes": self.prompt_cache_bytes}

    async def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        # A long prompt takes a while: tokenized in a thread, other streams keep flowing.
        encode = self.tokenizer.encode
        return await asyncio.to_thread(encode, text, add_special_tokens=add_special_tokens)

    async def detokenize(self, tokens: list[int]) -> str:
        return await asyncio.to_thread(self.tokenizer.decode, tokens)

    async def prompt_and_budget(self, request: EngineRequest) -> tuple[list[int], int]:
        """As for any engine; a prompt with images goes through the model's processor, which
        expands each image into its image tokens (so they count toward the context)."""
        if request.images and request.prompt_tokens is None:
            vision_model = self._runner.model
            request.prompt_tokens, request.engine_inputs = await asyncio.to_thread(
                vision_model.process, request.prompt, request.images
            )
        return await super().prompt_and_budget(request)

    async def generate(self, request: EngineRequest) -> AsyncIterator[GenerationEvent]:
        prompt, max_tokens = await self.prompt_and_budget(request)
        constraint = None
        if request.grammar is not None:
            constraint = await asyncio.to_thread(self._compiler().new_constraint, request.grammar)
        visible = await self.special_ids(request.visible_specials)
        detokenizer = IncrementalDetokenizer(self.tokenizer)
        jump = self._jump(request, constraint, max_tokens, visible, detokenizer)
        if jump is not None:
            prompt, max_tokens = prompt + jump.tokens, max_tokens - len(jump.tokens)
        else:  # the planned jump's text went through it
            detokenizer = IncrementalDetokenizer(self.tokenizer)
        events = EventHandoff(asyncio.get_running_loop())
        sequence = Sequence(
            request=request,
            prompt_tokens=prompt,
            max_tokens=max_tokens,
            emit=events.put_threadsafe,
            sampler=Sampler(request.sampling, self.vocab_size),
            detokenizer=detokenizer,
            eos_token_ids=self.eos_token_ids,
            constraint=constraint,
            visible_specials=visible,
            image_inputs=request.engine_inputs,
            cache_key=request.engine_inputs.cache_key if request.engine_inputs else None,
            adapter_generation=self._adapter_generation(request.adapter),
        )
        self._runner.submit(sequence)
        try:
            first = True
            while True:
                event = await events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event if jump is None else jump.onto(event, first)
                if event.is_final:
                    return
                first = False
        finally:
            sequence.cancel()

    def _jump(
        self,
        request: EngineRequest,
        constraint: OutputConstraint | None,
        max_tokens: int,
        visible: dict[int, str],
        detokenizer: IncrementalDetokenizer,
    ) -> JumpForward | None:
        """The tokens llguidance finds the grammar forces at the start (it stops before any
        that could merge with what follows), consumed by the grammar and spelled through the
        sequence's own detokenizer, which keeps them as the context of the text after them."""
        if constraint is None or constraint.matcher is None or not may_jump(request):
            return None
        tokens = constraint.matcher.compute_ff_tokens()
        if not tokens or len(tokens) >= max_tokens:
            return None
        text = "".join(visible.get(token) or detokenizer.add(token) for token in tokens)
        if writes_what_it_may_not(tokens, text, request):
            return None
        if not constraint.matcher.consume_tokens(tokens):
            raise EngineError(f"a grammar refused its own forced start: {tokens}")
        return JumpForward(tokens, text)

    async def load_adapter(self, name: str, directory: Path) -> int:
        """Load a LoRA adapter into the runner beside the base weights (once); its bytes."""
        if self.distributed is not None or not isinstance(self._runner.model, TextModel):
            kind = "a model split across machines" if self.distributed else "a vision model"
            raise Unsupported(f"LoRA adapters are not served for {kind}", param="model")
        try:
            nbytes = await self._on_runner(lambda model: _load_adapter(model, name, directory))
        except AdapterError as exc:
            raise InvalidRequest(str(exc), param="model") from exc
        if name not in self._adapter_loads:
            self._adapter_load_count += 1
            self._adapter_loads[name] = self._adapter_load_count
        return nbytes

    async def unload_adapter(self, name: str) -> None:
        if self._adapter_loads.pop(name, None) is None:
            return
        await self._on_runner(lambda model: model.adapters.unload(name))
        mx.clear_cache()

    def _adapter_generation(self, adapter: str | None) -> int:
        if adapter is None:
            return 0
        if adapter not in self._adapter_loads:
            raise Unsupported(f"adapter '{adapter}' is not loaded into this model", param="model")
        return self._adapter_loads[adapter]

    async def prompt_logprobs(self, tokens: list[int], top: int) -> list[TokenLogprob]:
        if self.distributed is not None or not isinstance(self._runner.model, TextModel):
            kind = "a model split across machines" if self.distributed else "a vision model"
            message = "the prompt's log-probabilities (echo with logprobs) are not served for "
            raise Unsupported(message + kind, param="echo")
        tokenizer = self.tokenizer
        return await self._on_runner(lambda model: score_prompt(model, tokenizer, tokens, top))

    async def score_relevance(self, job: RelevanceJob) -> np.ndarray:
        """P(yes) of each continuation (pipeline/rerank.py), on the runner thread between two
        decode steps. Only a text model whose cache holds one entry per token can pad rows."""
        model = self._runner.model
        if self.distributed or not (isinstance(model, TextModel) and model.per_token_cache):
            raise InvalidRequest("rerank needs a text model without recurrent layers", "model")
        scorer = await self._on_runner(lambda model: RelevanceScorer(model, job))
        scores = np.zeros(len(job.continuations), dtype=np.float32)
        for rows in score_batches(job.continuations):
            scores[rows] = await self._on_runner(lambda _, rows=rows: scorer.score(rows))
        return scores

    async def _on_runner(self, work):
        return await asyncio.wrap_future(self._runner.run_task(work))

    def _compiler(self) -> GrammarCompiler:
        if self._grammars is None:
            hf_tokenizer = self.tokenizer._tokenizer
            eos = sorted(self.eos_token_ids)
            self._grammars = GrammarCompiler(hf_tokenizer, self.vocab_size, eos)
        return self._grammars

    async def close(self) -> None:
        await asyncio.to_thread(self._runner.stop)

    def runtime_info(self) -> dict:
        return {
            "name": "mlx",
            "version": mx.__version__,
            "device": str(mx.default_device()),
            "supported_formats": ["safetensors"],
        }


def _load_adapter(model: TextModel, name: str, directory: Path) -> int:
    """On the runner thread, between steps: the layers' stacks change while nothing runs."""
    if model.adapters is None:
        model.adapters = AdapterBank(model.model)
    model.adapters.load(name, directory)
    return model.adapters.nbytes_of(name)


def _load_weights(path: Path, config: dict, kv_quantization: KVQuantization | None):
    """Called on the runner thread, which will own the arrays. A vision model without mlx-vlm
    installed still serves text: mlx-lm loads its language model alone. Only mlx-lm's caches
    are quantized (mlx-vlm keeps its own)."""
    if is_vision_model(config):
        if importlib.util.find_spec("mlx_vlm") is not None:
            return VisionLanguageModel.load(path, config)
        log.warning("%s: images need mlx-vlm (pip install 'mlxserve[vision]'); text only", path)
    from mlx_lm.utils import load_model

    model, _ = load_model(path)
    return TextModel(model, kv_quantization), load_tokenizer(path)
