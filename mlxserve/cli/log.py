"""`mlxserve log stream`: watch what each model receives (the exact formatted prompt, after the
chat template) and what it answers, live, as LM Studio's `lms log stream` shows."""

from __future__ import annotations

import argparse
import json
import sys
import time

from mlxserve.cli.client import Client, add_server_options, handle_errors

RULE = "-" * 60


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlxserve log", description="Server logs.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="stream")
    stream = actions.add_parser(
        "stream",
        help="print each request's formatted prompt and its output, live",
        description="Print, for each generation, the model, the exact prompt it receives and "
        "then its output and stats, until interrupted (Ctrl-C).",
    )
    stream.add_argument("--json", action="store_true", help="one JSON record per line")
    add_server_options(stream)
    return parser


def format_record(record: dict) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(record["time"]))
    head = f"[{stamp}] {record['type']} {record['id']} model={record['model']}"
    if record.get("endpoint"):
        head += f" endpoint={record['endpoint']}"
    if record.get("dropped_before"):
        head = f"({record['dropped_before']} records dropped: the reader fell behind)\n{head}"
    if record["type"] == "request":
        sampling = " ".join(f"{k}={v}" for k, v in record["sampling"].items() if v is not None)
        limits = f"max_tokens={record['max_tokens']} stop={record['stop']}"
        return f"{head}\n{sampling} {limits}\n{RULE} prompt\n{record['prompt']}\n{RULE}"
    lines = [head, f"{RULE} output", record["output"], RULE]
    if record.get("stats"):
        lines.append(format_stats(record["stats"]))
    if record.get("error"):
        lines.append(f"error: {record['error']}")
    return "\n".join(lines)


def format_stats(stats: dict) -> str:
    return (
        f"{stats['prompt_tokens']} prompt tokens ({stats['cached_prompt_tokens']} cached), "
        f"{stats['completion_tokens']} generated, {stats['tokens_per_second']:.1f} tok/s, "
        f"time to first token {stats['time_to_first_token']:.3f} s, "
        f"generation {stats['generation_time']:.3f} s, stop: {stats['stop_reason']}"
    )


@handle_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client = Client(args)
    announced = False
    for record in client.stream_events("/api/v0/log/stream"):
        if record is None:
            if not announced:
                print(
                    f"streaming logs from {client.url} (Ctrl-C to stop)",
                    file=sys.stderr,
                    flush=True,
                )
                announced = True
            continue
        print(json.dumps(record) if args.json else format_record(record), flush=True)
    print(f"mlxserve: the server at {client.url} ended the log stream", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
