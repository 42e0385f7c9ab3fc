"""Joining an ``mx.distributed`` group and loading one model sharded over it.

``mlx.launch`` starts the same command on every host; each process joins the group here, checks
the model in its own cache, and learns what every other rank found (an ``all_gather`` of a small
record per rank), so that a model missing, unhealthy or at another snapshot on any host stops the
start on every rank with the same message, naming that host. Only then do the ranks load their
shards together (mlx-lm's ``sharded_load``: tensor parallel where the model implements ``shard``,
pipeline where it implements ``pipeline``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlxk.errors import MlxkError, ModelIncompatible, ValidationError
from mlxk.generation.engine import Engine
from mlxk.generation.lockstep import Group, as_ints, from_bytes

BACKENDS = ("ring", "jaccl", "nccl", "mpi")  # mx.distributed's, in the order "any" tries them
RECORD_BYTES = 1024  # each rank's report on its model, JSON padded with zeros


def join(backend: str = "any") -> Group:
    """This process's group (as ``mlx.launch`` set it up); a clear error outside a launch."""
    import mlx.core as mx

    names = BACKENDS if backend == "any" else (backend,)
    for name in names:
        try:
            handle = mx.distributed.init(strict=True, backend=name)
        except (RuntimeError, ValueError):
            continue
        if handle.size() > 1:
            return Group(handle, name)
    raise ValidationError(
        "--distributed: this process is not part of a distributed group; start every rank with "
        "mlx.launch (e.g. mlx.launch -n 2 --backend ring -- mlxk serve --distributed --model NAME)"
    )


def agree_on_model(group: Group, find: Callable[[str], Any], name: str) -> Any:
    """Every rank checks ``name`` in its own cache (``find(name)`` returns the runnable model, with
    its ``path`` and ``model``, or raises the library's error); returns what ``find`` returned here
    when every rank has the same snapshot of a model that can be sharded, or raises one error
    naming each host with a problem."""
    import mlx.core as mx

    host = socket.gethostname()
    report: dict[str, Any] = {"host": host}
    found = None
    try:
        found = find(name)
        report["snapshot"] = found.model.hash
        problem = _sharding_problem(str(found.path))
        if problem is not None:
            report["error"] = problem
    except MlxkError as error:
        report["error"] = error.message
    encoded = json.dumps(report).encode()[:RECORD_BYTES].ljust(RECORD_BYTES, b"\0")
    with group.peers_watched():
        raw = bytes(as_ints(mx.distributed.all_gather(from_bytes(encoded), group=group.handle), "uint8"))
    reports = [
        json.loads(raw[i * RECORD_BYTES : (i + 1) * RECORD_BYTES].rstrip(b"\0")) for i in range(group.size)
    ]
    group.hosts = tuple(str(r.get("host", "?")) for r in reports)
    problems = [f"{r['host']} (rank {i}): {r['error']}" for i, r in enumerate(reports) if "error" in r]
    snapshots = {r.get("snapshot") for r in reports if "error" not in r}
    if not problems and len(snapshots) > 1:
        problems = [
            f"the hosts have different snapshots of {name}: "
            + ", ".join(
                f"{r['host']} (rank {i}) {str(r.get('snapshot'))[:12]}" for i, r in enumerate(reports)
            )
        ]
    if problems:
        raise ValidationError(f"--distributed: cannot serve {name}: " + "; ".join(problems))
    return found


def _sharding_problem(path: str) -> str | None:
    """Why mlx-lm cannot shard the model at ``path`` (None when it can); reads only its config."""
    from mlx_lm.utils import load_model

    model, _config = load_model(Path(path), lazy=True, strict=False)
    if _mode(model) is not None:
        return None
    family = type(model).__module__.rsplit(".", 1)[-1]
    return f"mlx-lm can shard {family} models neither tensor- nor pipeline-parallel"


def _mode(model: Any) -> str | None:
    """How mlx-lm shards ``model``: tensor parallel where it can, else pipeline (None: neither)."""
    if hasattr(model, "shard"):
        return "tensor"
    if hasattr(getattr(model, "model", None), "pipeline"):
        return "pipeline"
    return None


def load_sharded(group: Group, path: str) -> Engine:
    """This rank's shard of the snapshot at ``path`` (all ranks call this together), and the same
    random state on every rank, so that sampling picks the same tokens everywhere."""
    started = time.perf_counter()
    from mlxk.core.blas import ensure_blas

    ensure_blas()
    import mlx.core as mx
    from mlx_lm.utils import load_model, sharded_load

    mode = _mode(load_model(Path(path), lazy=True, strict=False)[0])
    tensor = group.handle if mode == "tensor" else None
    pipeline = group.handle if mode == "pipeline" else None
    # a rank lost while the others load (mlx-lm's closing barrier, the seed's all_sum) is reported
    # as such, on every rank still there
    with group.peers_watched():
        try:
            loaded = sharded_load(Path(path), pipeline, tensor, return_config=True)
        except ValueError as exc:  # mlx-lm's refusal of a model it cannot shard
            raise ModelIncompatible(str(exc)) from None
        model, tokenizer, config = loaded
        mine = mx.array([os.getpid() if group.rank == 0 else 0], dtype=mx.int64)
        (seed,) = as_ints(mx.distributed.all_sum(mine, group=group.handle), "int64")
    mx.random.seed(seed)
    return Engine(model, tokenizer, dict(config), time.perf_counter() - started)
