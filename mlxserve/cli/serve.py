"""`mlxserve serve`: start the server, preparing the default model on first run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from mlxserve.engine.base import PROMPT_CACHE_BYTES
from mlxserve.environment import env, env_flag
from mlxserve.models.loaded import MAX_QUEUED
from mlxserve.models.options import DISK_CACHE_BYTES
from mlxserve.models.store import default_models_dir
from mlxserve.pipeline.images import MAX_IMAGE_BYTES, ImageLimits
from mlxserve.pipeline.prepare import REQUEST_TIMEOUT

log = logging.getLogger("mlxserve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxserve serve",
        description="Serve OpenAI-compatible endpoints at http://HOST:PORT/v1. Every option can "
        "also be set with an MLXSERVE_<OPTION> environment variable (e.g. MLXSERVE_PORT).",
    )
    parser.add_argument("--host", default=env("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("PORT", "1234")))
    parser.add_argument(
        "--model",
        default=env("MODEL"),
        help="model id to load at start (default: Gemma 3 270M, prepared on first run)",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=env("MODELS_DIR"),
        help="model store (default: $MLXSERVE_HOME/models, ~/.mlxserve/models)",
    )
    parser.add_argument(
        "--engine",
        choices=("auto", "mlx", "llamacpp"),
        default=env("ENGINE", "auto"),
        help="auto: MLX on Apple Silicon, llama.cpp elsewhere",
    )
    parser.add_argument(
        "--context-length",
        type=int,
        default=env("CONTEXT_LENGTH"),
        help="context tokens per loaded model, fixed (default: the model's trained maximum when "
        "memory holds it, else the longest that fits; a longer prompt reloads the model)",
    )
    parser.add_argument(
        "--llama-server",
        type=Path,
        default=env("LLAMA_SERVER"),
        help="a llama-server binary for the llama.cpp engine",
    )
    parser.add_argument(
        "--no-jit",
        action="store_true",
        default=env_flag("NO_JIT"),
        help="do not load stored models on request",
    )
    parser.add_argument(
        "--no-discover",
        action="store_true",
        default=env_flag("NO_DISCOVER"),
        help="serve only the store's models, not those found in the Hugging Face cache and "
        "LM Studio's models folder",
    )
    parser.add_argument(
        "--ttl",
        type=float,
        default=env("TTL"),
        help="unload models loaded on request after this many idle seconds (default: never; "
        "a request's `ttl` field overrides it)",
    )
    parser.add_argument(
        "--max-loaded",
        type=int,
        default=env("MAX_LOADED"),
        help="keep at most this many models loaded, evicting the least recently used idle one",
    )
    parser.add_argument(
        "--api-key",
        default=env("API_KEY"),
        help="require this key, as `Authorization: Bearer KEY` or `x-api-key: KEY` (by default "
        "any key is accepted)",
    )
    parser.add_argument(
        "--cors",
        nargs="?",
        const="*",
        default=cors_setting(env("CORS")),
        metavar="ORIGINS",
        help="let web pages from these origins (comma-separated) call the API; alone or `*`: "
        "any origin (default: none but loopback origins, which get no CORS headers)",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=env("MAX_TOKENS"),
        help="cap every reply at this many tokens, and use it when a client sets no limit "
        "(default: none, a reply may fill the context; agent clients often set no limit)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=env("REQUEST_TIMEOUT", REQUEST_TIMEOUT),
        help="stop a request this many seconds after it arrived, queueing included, with a 504 "
        "or an error event (default: 1800; 0: no limit)",
    )
    parser.add_argument(
        "--max-queued",
        type=int,
        default=env("MAX_QUEUED", MAX_QUEUED),
        help="requests each model keeps waiting beyond those it decodes at once; more get a 429 "
        "with Retry-After (default: 256)",
    )
    parser.add_argument(
        "--prompt-cache-bytes",
        type=int,
        default=env("PROMPT_CACHE_BYTES", PROMPT_CACHE_BYTES),
        help="KV state each model keeps for reuse by later prompts (default: 2 GiB; whole MiB "
        "on llama.cpp)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=env("MAX_BATCH_SIZE"),
        help="sequences an MLX model decodes together (default 64; fewer when half the free "
        "memory cannot hold their prompts and longest replies)",
    )
    parser.add_argument(
        "--disk-cache-bytes",
        type=int,
        default=env("DISK_CACHE_BYTES", DISK_CACHE_BYTES),
        help="KV state of long prompts (512 tokens and more) each MLX model keeps on disk, in "
        "the store's .prompt-cache folder, to reuse after a restart (default: 4 GiB; 0: none)",
    )
    parser.add_argument(
        "--draft-model",
        default=env("DRAFT_MODEL"),
        help="a small model of the same vocabulary that drafts tokens for requests naming no "
        "draft_model (MLX: an MLX model; llama.cpp: a GGUF of the same architecture, loaded "
        "with each model)",
    )
    parser.add_argument(
        "--prompt-lookup",
        action="store_true",
        default=env_flag("PROMPT_LOOKUP"),
        help="decode speculatively with drafts taken from the prompt: the same tokens, faster "
        "when the reply repeats the prompt (edits, code); MLX requests may set prompt_lookup "
        "themselves, llama.cpp applies it to every request",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=env("MAX_BODY_BYTES", 64 * 1024**2),
        help="refuse request bodies larger than this with a 413 (default: 64 MiB)",
    )
    parser.add_argument(
        "--max-image-bytes",
        type=int,
        default=env("MAX_IMAGE_BYTES", MAX_IMAGE_BYTES),
        help="refuse images larger than this with a 413 (default: 20 MiB)",
    )
    parser.add_argument(
        "--allow-remote-images",
        action="store_true",
        default=env_flag("ALLOW_REMOTE_IMAGES"),
        help="fetch http(s) image URLs in requests (default: only data: URLs, so a web page "
        "cannot make the server fetch arbitrary addresses)",
    )
    parser.add_argument(
        "--allowed-hosts",
        default=env("ALLOWED_HOSTS", ""),
        metavar="HOSTS",
        help="Host header names to answer besides loopback ones (comma-separated; `*`: any), "
        "against DNS rebinding; a specific --host address is allowed itself",
    )
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "info"))
    return parser


def cors_setting(value: str | None) -> str | None:
    """MLXSERVE_CORS: a yes/no word turns CORS on for any origin or off; else it lists origins."""
    if value is None or value.strip().lower() in ("", "0", "false", "no", "off"):
        return None
    return "*" if value.strip().lower() in ("1", "true", "yes", "on") else value


def split_list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from mlxserve.api.app import AppConfig, create_app
    from mlxserve.api.guard import GuardOptions
    from mlxserve.models.convert.writer import recover_interrupted
    from mlxserve.models.defaults import ensure_default_model, resolve_engine
    from mlxserve.models.options import RegistryOptions
    from mlxserve.pipeline.prepare import ServerLimits

    models_dir = (args.models_dir or default_models_dir()).expanduser()
    if models_dir.is_dir():
        recover_interrupted(models_dir)  # a conversion killed mid-overwrite
    engine = resolve_engine(args.engine)
    model_id = args.model or ensure_default_model(models_dir, engine)
    options = RegistryOptions(
        engine=args.engine if args.engine != "auto" else "auto",
        jit=not args.no_jit,
        context_length=args.context_length,
        llama_server=args.llama_server,
        ttl=args.ttl,
        max_loaded=args.max_loaded,
        prompt_cache_bytes=args.prompt_cache_bytes,
        max_queued=args.max_queued,
        discover=not args.no_discover,
        prompt_lookup=args.prompt_lookup,
        disk_cache_bytes=args.disk_cache_bytes,
        max_batch_size=args.max_batch_size,
        draft_model=args.draft_model,
    )
    config = AppConfig(
        models_dir=models_dir,
        registry=options,
        preload=[model_id],
        guard=GuardOptions(
            api_key=args.api_key,
            cors_origins=split_list(args.cors),
            allowed_hosts=[*split_list(args.allowed_hosts), args.host],
        ),
        max_body_bytes=args.max_body_bytes,
        limits=ServerLimits(
            args.max_tokens,
            args.request_timeout or None,
            ImageLimits(int(args.max_image_bytes), remote=args.allow_remote_images),
        ),
    )
    app = create_app(config)
    print(
        f"mlxserve: serving {model_id} ({engine}) at http://{args.host}:{args.port}/v1", flush=True
    )
    run_event_loop(_serve(app, args.host, args.port))
    _exit_without_native_teardown()


def _exit_without_native_teardown() -> NoReturn:
    """Models are unloaded and children stopped by now. MLX's C++ teardown at interpreter exit
    can abort the process (SIGABRT) once a model ran on a thread other than the main one
    (ml-explore/mlx issue 3126), so the process leaves without it, as a clean exit."""
    children = sys.modules.get("mlxserve.engine.llamacpp.process")
    if children is not None:  # os._exit skips atexit: any child a failed unload left goes now
        children.stop_all()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_event_loop(main_coroutine) -> None:
    """uvloop where it is installed: each streamed token crosses the event loop twice (read from
    the engine, write to the client), and uvloop spends about a fifth less CPU on that."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
    else:
        uvloop.run(main_coroutine)


async def _serve(app, host: str, port: int) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from mlxserve.pipeline import logstream

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    logging.getLogger("hypercorn.error").propagate = False  # hypercorn logs through its own handler
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def shut_down() -> None:
        logstream.bus.close()  # end the endless `log stream` feeds so shutdown need not wait
        # Unloading now ends every generation in flight with an error event its client can
        # read, before the server stops waiting for responses and closes their connections.
        closing = asyncio.ensure_future(app.registry.close())
        closing.add_done_callback(lambda _: stop.set())

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shut_down)
    await serve(app, config, shutdown_trigger=stop.wait)


if __name__ == "__main__":
    sys.exit(main())
