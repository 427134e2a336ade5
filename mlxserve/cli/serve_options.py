"""Every `mlxserve serve` option, declared once: its flag, environment variable, type, default,
help and docs text. The argument parser, the registry's options and docs/cli.md's Options
table (checked by tests/test_serve_options.py) are all made from this table."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxserve.environment import TRUE_WORDS, env, env_flag
from mlxserve.media.images import MAX_IMAGE_BYTES
from mlxserve.models.memory import MEMORY_LIMIT_ENV
from mlxserve.models.options import RegistryOptions
from mlxserve.pipeline.prepare import REQUEST_TIMEOUT

REGISTRY_DEFAULTS = RegistryOptions()
MAX_BODY_BYTES = 64 * 1024**2


def flag_or_value(text: str | None, alone: str) -> str | None:
    """A variable for an option that may stand alone (--cors, --mcp-config): a yes/no word
    turns it on (as given alone) or off; anything else is its value."""
    if text is None or text.strip().lower() in ("", "0", "false", "no", "off"):
        return None
    return alone if text.strip().lower() in TRUE_WORDS else text


@dataclass(frozen=True)
class Option:
    flag: str  # --context-length: the attribute is context_length, the variable CONTEXT_LENGTH
    readme: str  # the Default column of docs/cli.md's Options table
    help: str | None = None  # argparse's help, when the flag alone does not say it
    type: Callable | None = None
    default: Any = None  # when neither the flag nor the environment sets it
    switch: bool = False  # a yes/no flag (store_true); its variable takes 1/true/yes/on
    choices: tuple | None = None
    metavar: str | None = None
    const: Any = None  # the value of the flag given alone, without one of its own
    registry: str | None = None  # the RegistryOptions field it sets, if any
    inverted: bool = False  # --no-jit sets jit to False
    secret: bool = False  # shown by the server only as set or not, never its value

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def variable(self) -> str:
        return self.dest.upper()

    @property
    def usage(self) -> str:
        """The flag as docs/cli.md writes it."""
        if self.const is not None:
            return f"{self.flag} [{self.metavar}]"
        return f"{self.flag} {self.metavar}" if self.metavar else self.flag

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.switch:
            parser.add_argument(
                self.flag, action="store_true", default=env_flag(self.variable), help=self.help
            )
            return
        options = {"type": self.type, "choices": self.choices, "metavar": self.metavar}
        if self.const is not None:
            options |= {"nargs": "?", "const": self.const}
        from_env = env(self.variable)
        if self.const is not None:
            from_env = flag_or_value(from_env, self.const)
        parser.add_argument(
            self.flag,
            default=self.default if from_env is None else from_env,
            help=self.help,
            **{key: value for key, value in options.items() if value is not None},
        )


def _registry_default(field: str) -> Any:
    return getattr(REGISTRY_DEFAULTS, field)


OPTIONS = (
    Option("--host", "`127.0.0.1`", default="127.0.0.1"),
    Option("--port", "`1234`", type=int, default=1234),
    Option(
        "--ollama-port",
        "off",
        "also listen on this port (Ollama's is 11434), for clients that only know Ollama's "
        "address; every route is served on both",
        type=int,
        metavar="PORT",
    ),
    Option(
        "--model",
        "the default model",
        "model id to load at start (default: Gemma 3 270M, prepared on first run)",
    ),
    Option(
        "--models-dir",
        "`$MLXSERVE_HOME/models` (`~/.mlxserve/models`)",
        "model store (default: $MLXSERVE_HOME/models, ~/.mlxserve/models)",
        type=Path,
    ),
    Option(
        "--engine",
        "`auto`",
        "auto: MLX on Apple Silicon, llama.cpp elsewhere (Whisper: MLX where it has a GPU)",
        choices=("auto", "mlx", "llamacpp"),
        default="auto",
        registry="engine",
    ),
    Option(
        "--context-length",
        "the model's trained maximum when memory holds it, else the longest that fits (see "
        "Context length); set, it is fixed",
        "context tokens per loaded model, fixed (default: the model's trained maximum when "
        "memory holds it, else the longest that fits; a longer prompt reloads the model)",
        type=int,
        registry="context_length",
    ),
    Option(
        "--api-key",
        "none: any key is accepted",
        "require this key, as `Authorization: Bearer KEY` or `x-api-key: KEY` (by default any "
        "key is accepted)",
        secret=True,
    ),
    Option(
        "--cors",
        "off; alone or `*`: any origin",
        "let web pages from these origins (comma-separated) call the API; alone or `*`: any "
        "origin (default: none but loopback origins, which get no CORS headers)",
        metavar="ORIGINS",
        const="*",
    ),
    Option(
        "--allowed-hosts",
        "loopback names only",
        "Host header names to answer besides loopback ones (comma-separated; `*`: any), against "
        "DNS rebinding; a specific --host address is allowed itself",
        default="",
        metavar="HOSTS",
    ),
    Option(
        "--no-ui",
        "browsers get the web page at `/` ([Web page](web.md))",
        "do not serve the web page (chat, models, live log) to browsers at /",
        switch=True,
    ),
    Option(
        "--max-body-bytes",
        "64 MiB (larger bodies are a 413)",
        "refuse request bodies larger than this with a 413 (default: 64 MiB)",
        type=int,
        default=MAX_BODY_BYTES,
    ),
    Option(
        "--max-image-bytes",
        "20 MiB per image (larger images are a 413)",
        "refuse images larger than this with a 413 (default: 20 MiB)",
        type=int,
        default=MAX_IMAGE_BYTES,
    ),
    Option(
        "--insecure-no-auth",
        "off: a `--host` other than loopback, and `--allow-request-mcp`, need `--api-key`",
        "serve without --api-key a --host reachable from the network (anyone who reaches it "
        "may load models, read the prompt log and run requests) or --allow-request-mcp",
        switch=True,
    ),
    Option(
        "--allow-remote-images",
        "off: only `data:` URLs",
        "fetch http(s) image URLs in requests, from public addresses only (default: only data: "
        "URLs, so a web page cannot make the server fetch arbitrary addresses)",
        switch=True,
    ),
    Option(
        "--image-allowed-hosts",
        "none: remote images must be on public addresses",
        "hosts (comma-separated names or addresses) remote images may be fetched from although "
        "they are not public: loopback, LAN, link-local (default: none)",
        default="",
        metavar="HOSTS",
    ),
    Option(
        "--allow-request-mcp",
        "off: requests may not name MCP servers; needs `--api-key`",
        "let requests name MCP servers by URL (/v1/responses `mcp` tools, /api/v1/chat "
        "`ephemeral_mcp` integrations), which this server then connects to for the model, on "
        "public addresses only; needs --api-key",
        switch=True,
    ),
    Option(
        "--mcp-allowed-hosts",
        "none: servers named in requests must be on public addresses",
        "hosts (comma-separated names or addresses) a request's MCP servers may be on although "
        "they are not public: loopback, LAN, link-local (default: none)",
        default="",
        metavar="HOSTS",
    ),
    Option(
        "--mcp-config",
        "off; alone: `$MLXSERVE_HOME/mcp.json`; its servers serve /api/v1/chat `plugin` "
        "integrations, with `--api-key` only",
        "serve the MCP servers of this mcp.json file (Cursor's format; alone: "
        "$MLXSERVE_HOME/mcp.json) to /api/v1/chat plugin integrations; needs --api-key",
        metavar="FILE",
        const="",
    ),
    Option(
        "--allow-mixed-mcp",
        "off: a request uses MCP servers it names or `mcp.json` plugins, not both",
        "let one request use MCP servers it names and mcp.json plugins together (a server's "
        "tool output could then steer the model into calling the plugins)",
        switch=True,
    ),
    Option(
        "--max-tokens",
        "none: a reply may fill the context; set, it caps every reply and is the length of one "
        "whose client set none",
        "cap every reply at this many tokens, and use it when a client sets no limit (default: "
        "none, a reply may fill the context; agent clients often set no limit)",
        type=int,
    ),
    Option(
        "--prompt-cache-bytes",
        "2 GiB of KV state per model for reuse by later prompts, least recently used evicted "
        "first (llama.cpp's `--cache-ram`, in whole MiB)",
        "KV state each model keeps for reuse by later prompts (default: 2 GiB; whole MiB on "
        "llama.cpp)",
        type=int,
        default=_registry_default("prompt_cache_bytes"),
        registry="prompt_cache_bytes",
    ),
    Option(
        "--max-queued",
        "256 requests per model waiting beyond those it decodes at once (MLX: its batch size, "
        "llama.cpp 4); more get a 429",
        "requests each model keeps waiting beyond those it decodes at once; more get a 429 with "
        "Retry-After (default: 256)",
        type=int,
        default=_registry_default("max_queued"),
        registry="max_queued",
    ),
    Option(
        "--max-batch-size",
        "MLX sequences decoded together: 64, fewer when half the free memory cannot hold their "
        "prompts and longest replies",
        "sequences an MLX model decodes together (default 64; fewer when half the free memory "
        "cannot hold their prompts and longest replies)",
        type=int,
        registry="max_batch_size",
    ),
    Option(
        "--sample-on",
        "`auto`: the device on a GPU, the host's C sampler on MLX's CPU backend",
        "where an MLX model's rows that need nothing host-only take their token: device (greedy "
        "and unseeded sampling, the next step built ahead), host (the C sampler), or auto "
        "(default: the device on a GPU, the host on the CPU backend, where it is cheaper)",
        choices=("auto", "device", "host"),
        default=_registry_default("sample_on"),
        registry="sample_on",
    ),
    Option(
        "--kv-bits",
        "none: keys and values at the model's precision",
        "keep every model's KV cache at 8 or 4 bits (MLX: grouped quantization, batching kept; "
        "llama.cpp: q8_0/q4_0 with flash attention); a load's kv_bits overrides it",
        type=int,
        choices=(8, 4),
        registry="kv_bits",
    ),
    Option(
        "--kv-group-size",
        "`64` elements share one scale (MLX)",
        "elements of a quantized MLX KV cache that share one scale and bias: 32, 64 or 128 "
        "(default: 64)",
        type=int,
        choices=(32, 64, 128),
        default=_registry_default("kv_group_size"),
        registry="kv_group_size",
    ),
    Option(
        "--disk-cache-bytes",
        "4 GiB of long prompts' KV state on disk, all MLX models together; `0`: none",
        "KV state of long prompts (512 tokens and more) the MLX models keep on disk, all "
        "together, in the store's .prompt-cache folder, to reuse after a restart (default: "
        "4 GiB; 0: none)",
        type=int,
        default=_registry_default("disk_cache_bytes"),
        registry="disk_cache_bytes",
    ),
    Option(
        "--prompt-lookup",
        "off: requests that do not ask decode without drafts",
        "decode speculatively with drafts taken from the prompt: the same tokens, faster when "
        "the reply repeats the prompt (edits, code); MLX requests may set prompt_lookup "
        "themselves, llama.cpp applies it to every request",
        switch=True,
        registry="prompt_lookup",
    ),
    Option(
        "--draft-model",
        "none: requests that name no `draft_model` decode without one",
        "a small model of the same vocabulary that drafts tokens for requests naming no "
        "draft_model (MLX: an MLX model; llama.cpp: a GGUF of the same architecture, loaded "
        "with each model)",
        registry="draft_model",
    ),
    Option(
        "--draft-models",
        "none: a request's `draft_model` may name only `--draft-model`",
        "comma-separated models a request's draft_model may name besides --draft-model (each "
        "is loaded beside the model it drafts for)",
        type=lambda value: tuple(v.strip() for v in value.split(",") if v.strip()),
        default=(),
        registry="draft_models",
    ),
    Option(
        "--request-timeout",
        "1800 seconds from arrival, queueing included; `0`: no limit",
        "stop a request this many seconds after it arrived, queueing included, with a 504 or an "
        "error event (default: 1800; 0: no limit)",
        type=float,
        default=REQUEST_TIMEOUT,
    ),
    Option(
        "--no-jit",
        "models load on request",
        "do not load stored models on request",
        switch=True,
        registry="jit",
        inverted=True,
    ),
    Option(
        "--no-discover",
        "models in the Hugging Face cache and LM Studio's folder are served too",
        "serve only the store's models, not those found in the Hugging Face cache and LM "
        "Studio's models folder",
        switch=True,
        registry="discover",
        inverted=True,
    ),
    Option(
        "--ttl",
        "none: models loaded on request stay loaded",
        "unload models loaded on request after this many idle seconds (default: never; a "
        "request's `ttl` field overrides it)",
        type=float,
        registry="ttl",
    ),
    Option(
        "--max-loaded",
        "no limit",
        "keep at most this many models loaded, evicting the least recently used idle one",
        type=int,
        registry="max_loaded",
    ),
    Option(
        "--llama-server",
        "the `xllamacpp` wheel, else `llama-server` on PATH",
        "a llama-server binary for the llama.cpp engine",
        type=Path,
        registry="llama_server",
    ),
    Option(
        "--distributed",
        "off: each model in one process; under `mlx.launch`, `tensor` or `pipeline` splits "
        "each MLX model across the ranks (see Distributed serving)",
        "split each MLX model across the processes mlx.launch starts (each rank the same "
        "command; rank 0 serves HTTP): tensor (mlx-lm's shard) or pipeline (layer ranges)",
        choices=("tensor", "pipeline"),
        registry="distributed",
    ),
    Option("--log-level", "`info`", default="info"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxserve serve",
        description="Serve OpenAI-compatible endpoints at http://HOST:PORT/v1. Every option can "
        "also be set with an MLXSERVE_<OPTION> environment variable (e.g. MLXSERVE_PORT).",
    )
    for option in OPTIONS:
        option.add_to(parser)
    return parser


def registry_options(args: argparse.Namespace) -> RegistryOptions:
    """The registry's options from the parsed ones that set them."""
    values = {option.registry: _value(option, args) for option in OPTIONS if option.registry}
    return dataclasses.replace(REGISTRY_DEFAULTS, **values)


def _value(option: Option, args: argparse.Namespace) -> Any:
    value = getattr(args, option.dest)
    return not value if option.inverted else value


def shown_options(args: argparse.Namespace, **resolved: Any) -> dict[str, Any]:
    """Each option as the server runs with it, by name, for `GET /api/v0/server`: `resolved`
    replaces defaults chosen at start (engine, model), a secret is only "set" or None."""
    values = {option.dest: _shown(option, getattr(args, option.dest)) for option in OPTIONS}
    return values | {name: _shown(None, value) for name, value in resolved.items()}


def _shown(option: Option | None, value: Any) -> Any:
    if option is not None and option.secret:
        return "set" if value else None
    if isinstance(value, Path):
        return str(value)
    return list(value) if isinstance(value, tuple) else value


def options_table() -> str:
    """docs/cli.md's Options table, with the one setting that is a variable only."""
    rows = ["| Option | Environment | Default |", "| --- | --- | --- |"]
    for option in OPTIONS:
        rows.append(f"| `{option.usage}` | `MLXSERVE_{option.variable}` | {option.readme} |")
    rows.append(f"| | `{MEMORY_LIMIT_ENV}` | the system's available memory |")
    return "\n".join(rows)
