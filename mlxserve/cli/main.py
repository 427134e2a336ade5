"""`mlxserve <command>`: dispatch to one module per subcommand, each with main(argv) -> int."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "serve": ("mlxserve.cli.serve", "start the OpenAI-compatible server"),
    "get": ("mlxserve.cli.get", "download a model from the Hugging Face Hub"),
    "convert": ("mlxserve.cli.convert", "convert GGUF or Hugging Face weights to MLX"),
    "server": ("mlxserve.cli.server", "start, stop or check a background server"),
    "ls": ("mlxserve.cli.ls", "list the models in the store"),
    "ps": ("mlxserve.cli.ps", "list the models a running server has loaded"),
    "load": ("mlxserve.cli.load", "load a model into a running server"),
    "unload": ("mlxserve.cli.unload", "unload models from a running server"),
    "log": ("mlxserve.cli.log", "stream each request's prompt and output (log stream)"),
    "chat": ("mlxserve.cli.chat", "chat with a model in the terminal"),
}


def usage() -> str:
    lines = ["usage: mlxserve <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run `mlxserve <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from mlxserve import __version__

        print(f"mlxserve {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"mlxserve: unknown command '{argv[0]}'\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
