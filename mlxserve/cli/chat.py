"""`mlxserve chat`: an interactive, streaming chat with a loaded model, through the openai SDK.

Reads one user message per line from stdin, so it works as well from a pipe as from a terminal;
`/exit` or end of input quits."""

from __future__ import annotations

import argparse
import sys

from mlxserve.cli.client import (
    EXIT_ERROR,
    EXIT_NOT_RUNNING,
    Client,
    add_server_options,
    handle_errors,
)

EXIT_COMMANDS = ("/exit", "/quit", "/bye")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxserve chat",
        description="Chat with a model in the terminal. One message per line; /exit or "
        "end of input (Ctrl-D) quits.",
    )
    parser.add_argument("model", nargs="?", help="model id (default: the loaded model)")
    parser.add_argument("--system", help="a system prompt")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--max-tokens", type=int, help="tokens per answer (default: no limit)")
    parser.add_argument("--ttl", type=int, help="idle seconds before a JIT-loaded model unloads")
    add_server_options(parser)
    return parser


def pick_model(client: Client, requested: str | None) -> str | None:
    if requested:
        return requested
    loaded = client.get("/api/v0/loaded")["data"]
    return loaded[0]["identifier"] if loaded else None


@handle_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client = Client(args)
    model = pick_model(client, args.model)
    if model is None:
        print("mlxserve: no model is loaded; name one: mlxserve chat MODEL", file=sys.stderr)
        return EXIT_ERROR
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {model} at {client.url} (/exit to quit)", file=sys.stderr)
    return chat_loop(args, client.url, model, interactive)


def chat_loop(args: argparse.Namespace, url: str, model: str, interactive: bool) -> int:
    import openai  # the SDK import is slow; commands that do not chat skip it

    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=args.api_key or "mlxserve", max_retries=0)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    options = {"temperature": args.temperature, "max_tokens": args.max_tokens}
    options = {name: value for name, value in options.items() if value is not None}
    extra = {"ttl": args.ttl} if args.ttl else None
    failures = 0
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() in EXIT_COMMANDS:
            return EXIT_ERROR if failures else 0
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.rstrip("\n")})
        try:
            stream = sdk.chat.completions.create(
                model=model, messages=messages, stream=True, extra_body=extra, **options
            )
            reply = "".join(_print_deltas(stream))
        except openai.APIConnectionError:
            print(f"\nmlxserve: lost the server at {url}", file=sys.stderr)
            return EXIT_NOT_RUNNING
        except openai.APIStatusError as exc:
            print(f"mlxserve: error {exc.status_code}: {_error_message(exc)}", file=sys.stderr)
            messages.pop()
            failures += 1
            continue
        messages.append({"role": "assistant", "content": reply})


def _error_message(exc) -> str:
    body = exc.body
    return body["message"] if isinstance(body, dict) and "message" in body else exc.message


def _print_deltas(stream):
    for chunk in stream:
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            print(text, end="", flush=True)
            yield text
    print(flush=True)


if __name__ == "__main__":
    sys.exit(main())
