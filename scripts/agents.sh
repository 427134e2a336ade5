#!/usr/bin/env bash
# Runs the real agent CLIs, Codex (`codex exec`) and Claude Code (`claude -p`), from npm against a
# server started with its defaults and a short server-side --max-tokens, two turns each (the
# second resumes the first session). Passes when every turn prints an answer and no API error.
#
#   scripts/agents.sh [--engine auto|mlx|llamacpp] [--max-tokens N] [--record DIR]
#
# --record DIR puts scripts/record_requests.py in front of the server and keeps every request
# the CLIs send (scrubbed) in DIR. The CLIs are installed once under $MLXSERVE_AGENTS_HOME
# (default ~/.cache/mlxserve/agents); CODEX_VERSION and CLAUDE_CODE_VERSION pick their versions.
set -uo pipefail
cd "$(dirname "$0")/.."

engine=auto
max_tokens=32
record=""
while [ $# -gt 0 ]; do
    case "$1" in
        --engine) engine=$2; shift 2 ;;
        --max-tokens) max_tokens=$2; shift 2 ;;
        --record) record=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

agents=${MLXSERVE_AGENTS_HOME:-$HOME/.cache/mlxserve/agents}
codex_version=${CODEX_VERSION:-0.171.0}
claude_version=${CLAUDE_CODE_VERSION:-2.1.332}
python=.venv/bin/python
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

install_clients() {
    mkdir -p "$agents"
    [ -f "$agents/package.json" ] || (cd "$agents" && npm init -y >/dev/null)
    (cd "$agents" && npm install --no-audit --no-fund --silent \
        "@openai/codex@$codex_version" "@anthropic-ai/claude-code@$claude_version") || exit 1
}

free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {  # URL, seconds, log
    for _ in $(seq "$(($2 * 5))"); do
        curl -sf "$1" >/dev/null && return 0
        sleep 0.2
    done
    echo "not ready: $1" >&2; tail -20 "$3" >&2; exit 1
}

start_server() {
    port=$(free_port)
    .venv/bin/mlxserve serve --port "$port" --engine "$engine" --max-tokens "$max_tokens" \
        >"$work/server.log" 2>&1 &
    pids+=($!)
    wait_for "http://127.0.0.1:$port/v1/models" 600 "$work/server.log"
    until curl -s "http://127.0.0.1:$port/health" | grep -q '"loaded":\["'; do sleep 0.5; done
    url="http://127.0.0.1:$port"
    if [ -n "$record" ]; then
        proxy=$(free_port)
        "$python" scripts/record_requests.py --upstream "$url" --port "$proxy" --out "$record" \
            >"$work/proxy.log" 2>&1 &
        pids+=($!)
        wait_for "http://127.0.0.1:$proxy/health" 60 "$work/proxy.log"
        url="http://127.0.0.1:$proxy"
    fi
    echo "server: $(curl -s "http://127.0.0.1:$port/health")"
}

# One CLI's run: its output, time and verdict. An answer is non-empty output with no error line.
check() {  # name, output file, exit status, seconds
    local name=$1 output=$2 status=$3 seconds=$4
    echo "== $name (exit $status, ${seconds}s)"
    cat "$output"
    if [ "$status" -ne 0 ] || ! grep -q '[[:alnum:]]' "$output" \
        || grep -qiE '^(API Error|ERROR:)|API Error:' "$output"; then
        echo "FAIL: $name"
        failed=1
    else
        echo "PASS: $name"
    fi
}

FIRST="Say hello in one short sentence."
SECOND="Now say it in French."

run_codex() {  # the turn's words, then resume for a later turn
    local home="$work/codex" started=$SECONDS status
    mkdir -p "$home" "$work/project"
    cat >"$home/config.toml" <<EOF
model = "local"
model_provider = "mlxserve"
[model_providers.mlxserve]
name = "mlxserve"
base_url = "$url/v1"
wire_api = "responses"
EOF
    (cd "$work/project" && CODEX_HOME="$home" timeout 900 "$agents/node_modules/.bin/codex" exec \
        --skip-git-repo-check ${2:+resume --last} "$1" </dev/null \
        >"$work/codex.out" 2>"$work/codex.err")
    status=$?
    grep -E '^(ERROR|error)' "$work/codex.err" >>"$work/codex.out"
    check "codex exec${2:+ resume}: $1" "$work/codex.out" "$status" "$((SECONDS - started))"
}

run_claude() {  # the turn's words, then continue for a later turn
    local started=$SECONDS status
    (cd "$work/project" && CLAUDE_CONFIG_DIR="$work/claude" ANTHROPIC_BASE_URL="$url" \
        ANTHROPIC_API_KEY=local CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
        timeout 900 "$agents/node_modules/.bin/claude" -p ${2:+--continue} "$1" \
        </dev/null >"$work/claude.out" 2>&1)
    status=$?
    check "claude -p${2:+ --continue}: $1" "$work/claude.out" "$status" "$((SECONDS - started))"
}

failed=0
install_clients
start_server
run_codex "$FIRST"
run_codex "$SECOND" again
run_claude "$FIRST"
run_claude "$SECOND" again
[ -z "$record" ] || echo "requests kept in $record"
exit "$failed"
