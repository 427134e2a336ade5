"""`mlxserve serve`'s options are declared once (mlxserve/cli/serve_options.py): the parser, the
registry's options and docs/cli.md's Options table all come from that table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mlxserve.cli.serve_options import OPTIONS, build_parser, options_table, registry_options
from mlxserve.models.options import RegistryOptions

OPTIONS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def test_the_documented_table_is_the_declared_one():
    text = OPTIONS_PAGE.read_text()
    section = text[text.index("## Options") :]
    table = section[
        section.index("| Option |") : section.index("\n\n", section.index("| Option |"))
    ]
    assert table == options_table()


def test_every_option_parses_from_its_flag_and_its_variable(monkeypatch):
    parsed = build_parser().parse_args(["--context-length", "2048", "--no-jit", "--cors"])
    assert (parsed.context_length, parsed.no_jit, parsed.cors) == (2048, True, "*")
    monkeypatch.setenv("MLXSERVE_CONTEXT_LENGTH", "8192")
    monkeypatch.setenv("MLXSERVE_TTL", "30")
    from_env = build_parser().parse_args([])
    assert (from_env.context_length, from_env.ttl) == (8192, 30.0)
    assert len({option.flag for option in OPTIONS}) == len(OPTIONS)


def test_the_registry_options_come_from_the_parsed_ones():
    args = build_parser().parse_args(
        ["--engine", "mlx", "--no-discover", "--max-batch-size", "3", "--prompt-lookup"]
    )
    options = registry_options(args)
    assert (options.engine, options.discover, options.jit) == ("mlx", False, True)
    assert (options.max_batch_size, options.prompt_lookup) == (3, True)
    # Nothing asked: every registry field a flag sets has the registry's own default, but for
    # discovery, which a server does unless told not to.
    defaults = registry_options(build_parser().parse_args([]))
    differing = {
        field.name
        for field in dataclasses.fields(RegistryOptions)
        if getattr(defaults, field.name) != getattr(RegistryOptions(), field.name)
    }
    assert differing == {"discover"}
    # Every registry option is a serve option, but for the ranks of a distributed group, which
    # mlx.launch decides.
    every_field = {field.name for field in dataclasses.fields(RegistryOptions)} - {"ranks"}
    assert {option.registry for option in OPTIONS if option.registry} == every_field
