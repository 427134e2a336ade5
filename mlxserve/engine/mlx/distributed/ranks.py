"""One model served by several processes: each rank loads its part of the weights, rank 0 serves
HTTP and the other ranks follow its steps (engine/mlx/distributed/lockstep_runners.py).

How a model is split: `--distributed tensor` uses the model's own `shard()` from mlx-lm (each
rank holds a slice of every layer's heads and MLP); `--distributed pipeline` uses mlx-lm's
`pipeline()` where the model has one, else mlxserve's own layer-range split
(engine/mlx/distributed/layer_split.py), so every text model can be spread over ranks.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.utils import load_model, sharded_load

from mlxserve.engine.base import EngineError
from mlxserve.engine.mlx.architectures.text_model import TextModel
from mlxserve.engine.mlx.architectures.vision import is_vision_model
from mlxserve.engine.mlx.distributed.cluster import Cluster, join
from mlxserve.engine.mlx.distributed.control_channel import Link, Session
from mlxserve.engine.mlx.distributed.layer_split import split_layers
from mlxserve.engine.mlx.distributed.lockstep_runners import FollowerRunner, LeaderRunner
from mlxserve.engine.mlx.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

GIB = 1024**3
WEIGHT_INDEX = "model.safetensors.index.json"  # mlx-lm's pipeline reads which files hold a layer


_session: Session | None = None


def start(mode: str) -> Session:
    """Join the group (blocks until every rank has started)."""
    global _session
    cluster = join(mode)
    _session = Session(cluster, Link(cluster))
    return _session


def current() -> Session | None:
    return _session


def leader_runner(path: Path, model_id: str, **options) -> LeaderRunner:
    """Rank 0's runner for the model at `path`, which every rank loads its part of. The group
    serves it until the runner stops."""
    session = current()
    session.model_id = model_id
    load = functools.partial(load_shard, path, session.cluster, session.link, model_id)
    return LeaderRunner(load, session, **options)


def load_shard(path: Path, cluster: Cluster, link: Link, model_id: str | None = None):
    """This rank's part of the model at `path`, and its tokenizer. Rank 0 passes the model's id:
    once the model is known to split, the other ranks are told to load it too. A failure after
    that leaves the ranks out of step, so it ends the server."""
    load = _split_method(path, cluster)
    if model_id is not None:
        link.send("load", model_id, watched=False)  # another rank may be slower to get here
    try:
        model = load()
        tokenizer = load_tokenizer(path)
        cluster.barrier()  # every rank has its part before any serves: a slow disk is no hang
    except Exception as exc:  # noqa: BLE001 - the other ranks cannot go on without this one
        link.fail(f"rank {cluster.rank} could not load {path}: {exc!r}")
    weights = sum(a.nbytes for _, a in tree_flatten(model.parameters()) if isinstance(a, mx.array))
    log.info(
        "rank %d holds its part of %s (%s): %.2f GiB of weights, MLX active memory %.2f GiB",
        cluster.rank,
        path.name,
        cluster.mode,
        weights / GIB,
        mx.get_active_memory() / GIB,
    )
    return TextModel(model), tokenizer


def _split_method(path: Path, cluster: Cluster):
    """How this model splits in the cluster's mode, checked before any rank reads weights."""
    config = _config(path)
    if is_vision_model(config):
        raise EngineError(f"distributed serving splits text models; {path.name} takes images")
    model, _ = load_model(path, lazy=True, strict=False)  # the model's class; no weights read
    if cluster.mode == "tensor":
        _check_tensor_split(model, config, cluster.size, path.name)
        return functools.partial(_mlx_lm_load, path, tensor_group=cluster.group)
    if hasattr(getattr(model, "model", None), "pipeline") and (path / WEIGHT_INDEX).exists():
        return functools.partial(_mlx_lm_load, path, pipeline_group=cluster.group)
    return functools.partial(_layer_range_load, path, cluster.group)


def _check_tensor_split(model, config: dict, ranks: int, name: str) -> None:
    if not hasattr(model, "shard"):
        raise EngineError(
            f"mlx-lm cannot split {name} ({config.get('model_type')}) by tensors; serve it "
            "with --distributed pipeline"
        )
    text = config.get("text_config", config)
    heads = text.get("num_attention_heads", 0)
    kv_heads = text.get("num_key_value_heads") or heads
    if heads % ranks or kv_heads % ranks:
        raise EngineError(
            f"{name} has {heads} attention heads and {kv_heads} key/value heads, which "
            f"{ranks} ranks cannot share evenly; serve it with --distributed pipeline"
        )


def _mlx_lm_load(path: Path, **groups):
    return sharded_load(str(path), **groups)[0]


def _layer_range_load(path: Path, group: mx.distributed.Group):
    model, _ = load_model(path, lazy=True)
    split_layers(model, group)
    mx.eval(model.parameters())  # reads only this rank's layers and rows
    return model


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def follow(session: Session, find_model) -> None:
    """Rank 1 and up: load each model rank 0 loads and run its steps, until it says the server
    is done. `find_model(model_id)` is this machine's copy of a model (a ModelRecord or None)."""
    cluster, link = session.cluster, session.link
    while True:
        for kind, *args in link.receive(watched=False):
            if kind == "exit":
                return
            if kind == "load":
                _follow_model(cluster, link, find_model, args[0])


def _follow_model(cluster: Cluster, link: Link, find_model, model_id: str) -> None:
    record = find_model(model_id)
    if record is None:
        link.fail(f"rank {cluster.rank} has no model {model_id!r} in its store: copy it there")
    load = functools.partial(load_shard, record.directory, cluster, link)
    FollowerRunner(load, link).follow()
