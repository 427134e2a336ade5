"""`mlxserve serve`: start the server, preparing the default model on first run."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import signal
import sys
from typing import NoReturn

from mlxserve.cli.serve_options import build_parser, registry_options, shown_options
from mlxserve.media.images import ImageLimits
from mlxserve.models.store import default_models_dir
from mlxserve.net.hosts import HostPolicy
from mlxserve.redact import scrub_logs

log = logging.getLogger("mlxserve")


def split_list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=args.log_level.upper(), format=log_format)
    scrub_logs(log_format)
    from mlxserve.api.app import AppConfig, create_app
    from mlxserve.api.http.guard import GuardOptions
    from mlxserve.models.convert.writer import recover_interrupted
    from mlxserve.models.defaults import ensure_default_model, resolve_engine
    from mlxserve.pipeline.prepare import ServerLimits

    mcp = _mcp_settings(args)
    models_dir = (args.models_dir or default_models_dir()).expanduser()
    session = _join_group(args) if args.distributed else None
    if session is not None and session.cluster.rank > 0:
        _follow(session, models_dir, args)
    _check_exposure(args)
    if models_dir.is_dir():
        recover_interrupted(models_dir)  # a conversion killed mid-overwrite
    engine = resolve_engine(args.engine)
    model_id = args.model or ensure_default_model(models_dir, engine)
    if session is not None:
        session.cluster.barrier()  # the other ranks look for the model once it is ready here
    options = registry_options(args)
    if session is not None:  # each rank holds its share of a model: memory is counted so
        options = dataclasses.replace(options, ranks=session.cluster.size)
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
            ImageLimits(
                int(args.max_image_bytes),
                remote=args.allow_remote_images,
                hosts=HostPolicy.of(split_list(args.image_allowed_hosts)),
            ),
        ),
        mcp=mcp,
        ui=not args.no_ui,
        options=shown_options(args, engine=engine, model=model_id, models_dir=models_dir),
    )
    app = create_app(config)
    print(
        f"mlxserve: serving {model_id} ({engine}) at http://{args.host}:{args.port}/v1", flush=True
    )
    if not args.no_ui:
        print(f"mlxserve: the web page is at http://{args.host}:{args.port}/", flush=True)
    if args.ollama_port:
        print(f"mlxserve: Ollama's API also at http://{args.host}:{args.ollama_port}", flush=True)
    run_event_loop(_serve(app, args.host, [args.port, args.ollama_port]))
    if session is not None:
        session.dismiss()
    _exit_without_native_teardown()


def _check_exposure(args) -> None:
    """A server reachable from the network without an api key serves anyone there: refused
    unless asked for by name, and then said loudly."""
    if args.api_key or _is_loopback(args.host):
        return
    if not args.insecure_no_auth:
        sys.exit(
            f"mlxserve: --host {args.host} is reachable from the network; set --api-key (or "
            "MLXSERVE_API_KEY), or pass --insecure-no-auth to serve it to anyone there"
        )
    log.warning(
        "--host %s without --api-key: anyone who reaches this address may use the server",
        args.host,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def _mcp_settings(args):
    """The MCP options; a broken mcp.json stops the server with a message, and so does
    --allow-request-mcp without a key, unless --insecure-no-auth asks for it by name."""
    from mlxserve.mcp.pool import McpConfigError, mcp_settings

    if args.allow_request_mcp and not args.api_key:
        if not args.insecure_no_auth:
            sys.exit(
                "mlxserve: --allow-request-mcp lets every client make this server connect to "
                "URLs it names; set --api-key (or MLXSERVE_API_KEY), or pass --insecure-no-auth "
                "to allow it to anyone who reaches the server"
            )
        log.warning(
            "--allow-request-mcp without --api-key: anyone who reaches this server may "
            "make it connect to MCP servers"
        )
    try:
        settings = mcp_settings(
            args.allow_request_mcp,
            args.mcp_config,
            bool(args.api_key),
            allowed_hosts=split_list(args.mcp_allowed_hosts),
            allow_mixing=args.allow_mixed_mcp,
        )
    except McpConfigError as exc:
        sys.exit(f"mlxserve: {exc}")
    if settings.plugins is not None and not settings.api_key_set:
        log.warning("--mcp-config: its servers are refused to requests unless --api-key is set")
    return settings


def _join_group(args):
    """Rank 0 of `--distributed` serves HTTP; each other rank only follows it. Exits with a
    message when the group cannot be formed."""
    if args.engine == "llamacpp":
        sys.exit(
            "mlxserve: --distributed splits MLX models across processes; the llama.cpp engine "
            "serves each model in one process (use --engine mlx)"
        )
    args.engine = "mlx"
    from mlxserve.engine.mlx.distributed import ranks
    from mlxserve.engine.mlx.distributed.cluster import ClusterError

    try:
        return ranks.start(args.distributed)
    except ClusterError as exc:
        sys.exit(f"mlxserve: {exc}")


def _follow(session, models_dir, args) -> NoReturn:
    """A rank other than 0: no HTTP; load what rank 0 loads and run its steps until it exits."""
    from mlxserve.engine.mlx.distributed import ranks
    from mlxserve.models.catalog import ModelCatalog
    from mlxserve.models.defaults import ensure_default_model

    # Ctrl-C reaches every rank: rank 0 shuts down and then tells this one to exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    session.cluster.barrier()  # rank 0 prepared the default model: on one machine, once
    if not args.model:
        ensure_default_model(models_dir, "mlx")
    catalog = ModelCatalog(models_dir, registry_options(args).discover)
    ranks.follow(session, catalog.find)
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


async def _serve(app, host: str, ports: list[int | None]) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from mlxserve import logstream
    from mlxserve.api.state import server_state

    config = Config()
    config.bind = [f"{host}:{port}" for port in ports if port]  # --ollama-port: a second one
    config.accesslog = None
    logging.getLogger("hypercorn.error").propagate = False  # hypercorn logs through its own handler
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def shut_down() -> None:
        logstream.bus.close()  # end the endless `log stream` feeds so shutdown need not wait
        # Unloading now ends every generation in flight with an error event its client can
        # read, before the server stops waiting for responses and closes their connections.
        closing = asyncio.ensure_future(server_state(app).registry.close())
        closing.add_done_callback(lambda _: stop.set())

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shut_down)
    await serve(app, config, shutdown_trigger=stop.wait)


if __name__ == "__main__":
    sys.exit(main())
