"""The llama.cpp child process: `python launcher.py [options]` (or `python -m` this module).

process.py runs this file by path, which keeps the mlxserve package (and the BLAS it preloads)
out of the llama.cpp process; it imports nothing but the standard library and xllamacpp.

Two modes, both guarded against outliving the parent:

* Built-in server (default): runs the `xllamacpp` wheel's llama.cpp HTTP server in this process.
  Accepts the subset of `llama-server` options that mlxserve uses, so both backends share one
  argument list. With `--port 0` it binds a free port and prints `READY_MARKER <url>` on stdout.
* `--exec BINARY -- ARGS...`: runs an external `llama-server`. On Linux it replaces this process
  (same pid); elsewhere (or with `--supervise`) it runs the binary as its child and kills it
  when the stdin pipe closes or SIGTERM arrives.

On Linux the kernel kills this process when the parent dies (PR_SET_PDEATHSIG). Everywhere,
`--exit-on-stdin-eof` makes it exit when the parent's end of the stdin pipe closes, which also
happens when the parent is killed.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

READY_MARKER = "mlxserve-llamacpp-listening"
# The child's API key, so that no other local program or web page can use its port; llama-server
# binaries read the same variable.
API_KEY_VARIABLE = "LLAMA_API_KEY"
PR_SET_PDEATHSIG = 1
CACHE_TYPES = ("f16", "q8_0", "q4_0")  # llama-server's -ctk/-ctv values that mlxserve uses
FLASH_ATTENTION = {"on": "ENABLED", "off": "DISABLED", "auto": "AUTO"}
LINUX = sys.platform.startswith("linux")


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent exits; exit now if it already has."""
    if LINUX:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)


def exit_on_stdin_eof(on_exit: Callable[[], object] | None = None) -> None:
    """Portable parent-death detection: the parent holds our stdin pipe open while it lives."""

    def watch() -> None:
        while os.read(0, 4096):
            pass
        if on_exit is not None:
            on_exit()
        os._exit(0)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mlxserve.engine.llamacpp.launcher")
    parser.add_argument("-m", "--model", default="")
    parser.add_argument("--mmproj", default="")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("-c", "--ctx-size", type=int, default=4096)
    parser.add_argument("-np", "--parallel", type=int, default=1)
    parser.add_argument("-t", "--threads", type=int, default=-1)
    parser.add_argument("-tb", "--threads-batch", type=int, default=-1)
    parser.add_argument("--poll", type=int, default=None)
    parser.add_argument("-b", "--batch-size", type=int, default=None)
    parser.add_argument("-ub", "--ubatch-size", type=int, default=None)
    parser.add_argument("-cb", "--cont-batching", action="store_true", default=True)
    parser.add_argument("-nocb", "--no-cont-batching", dest="cont_batching", action="store_false")
    parser.add_argument("--kv-unified", action="store_true")
    parser.add_argument("--cache-ram", type=int, default=None)
    parser.add_argument("-ctk", "--cache-type-k", choices=CACHE_TYPES, default=None)
    parser.add_argument("-ctv", "--cache-type-v", choices=CACHE_TYPES, default=None)
    parser.add_argument("-fa", "--flash-attn", choices=("on", "off", "auto"), default=None)
    parser.add_argument("--spec-type", choices=("ngram-simple", "draft-simple"), default=None)
    parser.add_argument("-md", "--model-draft", default="")
    parser.add_argument("--lora", action="append", default=[])
    parser.add_argument("--lora-init-without-apply", action="store_true")
    parser.add_argument("--embedding", "--embeddings", action="store_true")
    parser.add_argument("--pooling", choices=("none", "mean", "cls", "last", "rank"))
    parser.add_argument("--metrics", action="store_true")
    parser.add_argument("--slots", action="store_true", default=True)
    parser.add_argument("--no-slots", dest="slots", action="store_false")
    parser.add_argument("--no-webui", action="store_true")
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    parser.add_argument("--parent-pid", type=int, default=0)
    parser.add_argument("--exec", dest="exec_binary", default=None)
    # Supervising (rather than exec'ing) is the default where PR_SET_PDEATHSIG does not exist.
    parser.add_argument("--supervise", action="store_true", default=not LINUX)
    parser.add_argument("exec_args", nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def build_params(args: argparse.Namespace):
    """Translate llama-server style options into xllamacpp's CommonParams."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    if args.mmproj:
        params.mmproj.path = args.mmproj
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx_size
    params.n_parallel = args.parallel
    params.cont_batching = args.cont_batching
    params.kv_unified = args.kv_unified
    if os.environ.get(API_KEY_VARIABLE):  # an environment variable: argv is visible to `ps`
        params.api_keys = [os.environ[API_KEY_VARIABLE]]
    if args.cache_ram is not None:
        params.cache_ram_mib = args.cache_ram
    set_cache_types(params, args, xllamacpp)
    if args.model_draft:
        params.speculative.draft.mparams.path = args.model_draft
    scale = 0.0 if args.lora_init_without_apply else 1.0  # llama-server's startup scales
    params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(path, scale) for path in args.lora]
    params.lora_init_without_apply = args.lora_init_without_apply
    if args.spec_type:
        kind = f"COMMON_SPECULATIVE_TYPE_{args.spec_type.upper().replace('-', '_')}"
        params.speculative.types = [xllamacpp.common_speculative_type[kind]]
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads_batch
    params.endpoint_metrics = args.metrics
    params.endpoint_slots = args.slots
    params.ui = not args.no_webui
    params.warmup = not args.no_warmup
    if args.poll is not None:
        params.cpuparams.poll = args.poll
        params.cpuparams_batch.poll = args.poll
    if args.batch_size:
        params.n_batch = args.batch_size
    if args.ubatch_size:
        params.n_ubatch = args.ubatch_size
    if args.embedding:
        params.embedding = True
    if args.pooling:
        pooling = f"LLAMA_POOLING_TYPE_{args.pooling.upper()}"
        params.pooling_type = xllamacpp.llama_pooling_type[pooling]
    return params


def set_cache_types(params, args: argparse.Namespace, xllamacpp) -> None:
    """The KV cache's element types (f16 unless set) and flash attention, which a quantized V
    cache needs."""
    if args.cache_type_k:
        params.cache_type_k = xllamacpp.ggml_type[f"GGML_TYPE_{args.cache_type_k.upper()}"]
    if args.cache_type_v:
        params.cache_type_v = xllamacpp.ggml_type[f"GGML_TYPE_{args.cache_type_v.upper()}"]
    if args.flash_attn:
        kind = f"LLAMA_FLASH_ATTN_TYPE_{FLASH_ATTENTION[args.flash_attn]}"
        params.flash_attn_type = xllamacpp.llama_flash_attn_type[kind]


def serve_builtin(args: argparse.Namespace) -> None:
    import xllamacpp

    server = xllamacpp.Server(build_params(args))  # returns once the model is loaded and bound
    # One write (atomic on a pipe) on a line of its own: llama.cpp's log thread writes to the same
    # pipe piecemeal and may be halfway through a line.
    os.write(1, f"\n{READY_MARKER} {server.listening_address}\n".encode())
    threading.Event().wait()  # the HTTP server runs on llama.cpp's threads until we are killed


def run_binary(binary: str, binary_args: list[str], supervise: bool) -> int:
    argv = [binary, *binary_args]
    if not supervise:
        os.execv(binary, argv)
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    exit_on_stdin_eof(on_exit=child.kill)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    return child.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    die_with_parent(args.parent_pid)
    if args.exec_binary:
        exec_args = args.exec_args[1:] if args.exec_args[:1] == ["--"] else args.exec_args
        return run_binary(args.exec_binary, exec_args, args.supervise)
    if args.exec_args:
        print(f"unexpected arguments without --exec: {args.exec_args}", file=sys.stderr)
        return 2
    if args.exit_on_stdin_eof:
        exit_on_stdin_eof()
    serve_builtin(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
