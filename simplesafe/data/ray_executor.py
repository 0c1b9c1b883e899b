"""Ray Data executor for the batch cleaning and scoring step of ``simplesafe data build``.

On one machine the build scores answers and Wikipedia leads in-process or with
``datasets.map(num_proc=...)`` (:mod:`simplesafe.data.scoring`). With ``executor: ray``
the same pure batch functions (:func:`simplesafe.data.scoring._map_fn`: Reddit answer
cleaning, word count, Flesch reading ease, Flesch-Kincaid grade, toxicity) run as
``ray.data.from_items(rows).map_batches(...)`` over a Ray cluster instead. Every row
carries its input position in an ``_idx`` column and the results are sorted by it, so
the output is the same as the local path value for value, in the same order (checked by
``tests/data/test_ray_executor.py``). Results come back as Arrow tables, so integers stay
integers and a missing score stays ``None`` (no pandas NaN round trip). The rest of the
build (filters, leakage, routing) runs on the driver: it needs all questions at once.

Ray is an optional extra (``pip install 'simplesafe[ray]'``) and is imported only when
``executor: ray`` is chosen.

Local mode (``ray_address`` unset): the first Ray scoring call starts a local Ray with
``num_proc`` CPUs and no dashboard, and it stays up for the later calls of the build
(Ray shuts it down when the process exits). A Ray already started in the process
(``ray.init(...)`` by the caller) is used as it is.

On a cluster, run the build on the head node (or submit it there) and connect to the
running cluster with ``ray_address=auto``; every node needs simplesafe installed with the
extra, and the input files must be readable on the driver (only the texts travel to the
workers)::

    # on the Ray head node
    simplesafe data build recipe.yaml executor=ray ray_address=auto

    # from a laptop, through the Ray job API (the working directory is shipped)
    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        simplesafe data build recipe.yaml executor=ray ray_address=auto

    # or with a cluster launcher config
    ray submit cluster.yaml build.py   # build.py calls simplesafe.data.build.build_datasets

A recipe can set the same keys in its ``data`` section (``executor: ray``,
``ray_address: auto``); ``ray_address`` also takes ``ray://HEAD:10001`` (Ray Client).
"""

from __future__ import annotations

import logging

from simplesafe.errors import ConfigError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'simplesafe[ray]'"
_IDX = "_idx"


def require_ray():
    """Import Ray Data, or raise a ConfigError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray without the [data] extra lacks its deps)
    except ImportError as e:
        raise ConfigError(f"executor: ray needs Ray Data, which is not installed ({e}); install it with: {INSTALL_HINT}") from e
    return ray


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast on a ``HOST:PORT`` nobody listens on: ``ray.init`` retries it for minutes."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms are Ray's to resolve
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"ray_address: no Ray cluster answers at {address!r} ({e}); "
                          "start one with 'ray start --head' or use ray_address=auto on a head node") from e


def ensure_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to Ray once per process: the cluster at ``address``, else local mode.

    A Ray session already started in this process is reused (its address wins).
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        _check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as e:
            raise ConfigError(f"ray_address: cannot connect to a Ray cluster at {address!r}: {e}") from e
    else:
        log.info("starting Ray in local mode with %s CPUs", num_cpus)
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return ray


def _ray_batch(batch, backend=None, clean=False, toxicity=True):
    """Run the local batch function on one Arrow batch; keeps ``_idx`` for ordering."""
    import pyarrow as pa

    from simplesafe.data.scoring import _map_fn

    texts = batch.column("text").to_pylist()
    out = _map_fn({"text": texts}, backend=backend, clean=clean, toxicity=toxicity)
    out = {_IDX: batch.column(_IDX).to_pylist(), **out}
    return pa.table(out)


def score_texts_ray(
    texts: list[str],
    backend: dict | str | None = None,
    batch_size: int = 256,
    clean: bool = False,
    toxicity: bool = True,
    address: str | None = None,
    num_cpus: int | None = None,
) -> dict[str, list]:
    """:func:`simplesafe.data.scoring.score_texts` on Ray Data: ``{column: list}``, input order.

    The arguments mean the same as there; ``address``/``num_cpus`` pick the Ray cluster
    (see :func:`ensure_ray`).
    """
    import pyarrow as pa

    texts = list(texts)
    ray = ensure_ray(address, num_cpus)
    if not texts:
        raise ValueError("score_texts_ray needs at least one text (score_texts handles empty input)")
    ds = ray.data.from_items([{_IDX: i, "text": t} for i, t in enumerate(texts)])
    scored = ds.map_batches(
        _ray_batch, batch_size=batch_size, batch_format="pyarrow",
        fn_kwargs={"backend": backend, "clean": clean, "toxicity": toxicity},
    )
    tables = [t for t in ray.get(scored.to_arrow_refs()) if t.num_rows]
    # a batch whose scores are all missing has a null-typed column: promote to the others' type
    table = pa.concat_tables(tables, promote_options="default")
    table = table.sort_by(_IDX)
    out = table.to_pydict()
    if out.pop(_IDX) != list(range(len(texts))):
        raise RuntimeError("Ray Data returned a different set of rows than it was given")
    return out
