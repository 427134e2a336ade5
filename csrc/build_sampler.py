"""cffi build script for the C sampler: compiles csrc/sampler.c into mlxserve.sampling._sampler_c.

setup.py wires it in through `cffi_modules`, so `pip install` builds it; an editable install
(`pip install --no-build-isolation -e .`) puts the extension next to the sources.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import tempfile
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
MODULE = "mlxserve.sampling._sampler_c"

# No -ffast-math: banned tokens are -inf and NaN logits must compare false. No -march: a wheel
# must run on any CPU of its architecture. -fno-trapping-math only lets loops vectorize, and
# -ffp-contract=off keeps results identical on CPUs with and without fused multiply-add.
UNIX_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
COMPILE_ARGS = [] if sys.platform == "win32" else UNIX_FLAGS

CDEF = """
typedef struct {
    float temperature;
    int top_k;
    float top_p;
    float min_p;
    float repeat_penalty;
    int repeat_last_n;
    float presence_penalty;
    float frequency_penalty;
    uint64_t seed;
} SamplerConfig;

typedef struct Sampler Sampler;

Sampler *sampler_new(int vocab_size, const SamplerConfig *config, const int *bias_tokens,
                     const float *bias_values, int n_bias);
void sampler_free(Sampler *sampler);
int sampler_feed(Sampler *sampler, const int *tokens, int n_tokens);
int sampler_sample(Sampler *sampler, const float *logits, float *logprob);
int sampler_sample_allowed(Sampler *sampler, const float *logits, const uint32_t *allowed,
                           float *logprob);
int sampler_sample_logprobs(Sampler *sampler, const float *logits, const uint32_t *allowed, int k,
                            int *top_tok, float *top_logprob, int *n_top, float *token_logprob);
int sampler_probs(Sampler *sampler, const float *logits, float *probs);
#define MAX_TOP_LOGPROBS 20
"""


def compiler_help() -> str:
    if sys.platform == "darwin":
        return "install the Xcode command line tools: xcode-select --install"
    if sys.platform == "win32":
        return "install the Microsoft C++ Build Tools (Visual Studio Build Tools)"
    return (
        "install gcc, e.g. `sudo apt-get install gcc` (Debian/Ubuntu, or build-essential), "
        "`sudo dnf install gcc` (Fedora) or `sudo apk add build-base` (Alpine)"
    )


def ensure_c_compiler() -> None:
    """Compile an empty program with the compiler setuptools will use; exit with advice if none."""
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as work:
        source = Path(work, "probe.c")
        source.write_text("int main(void) { return 0; }\n")
        try:
            compiler.compile([str(source)], output_dir=work)
        except Exception as exc:  # noqa: BLE001 - any failure means no usable compiler
            name = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
            raise SystemExit(
                f"mlxserve needs a C compiler to build its sampler, and `{name}` did not work "
                f"({exc}).\nTo fix: {compiler_help()}; then install mlxserve again."
            ) from None


def make_builder() -> FFI:
    def where(path: Path) -> str:
        return os.path.relpath(path, os.getcwd())  # setuptools wants paths relative to its cwd

    builder = FFI()
    builder.cdef(CDEF)
    builder.set_source(
        MODULE,
        '#include "sampler.h"',
        sources=[where(HERE / "sampler.c")],
        depends=[where(HERE / "sampler.h")],
        include_dirs=[where(HERE)],
        extra_compile_args=COMPILE_ARGS,
    )
    return builder


ensure_c_compiler()
ffibuilder = make_builder()
