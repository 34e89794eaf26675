"""``labelwheel embed`` on a real local Ray: the store it writes equals the in-process one.

ray is in the dev extra: if it is missing this test fails (it does not skip).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from labelwheel.distributed import EmbedSource, run_embed
from labelwheel.features.store import EmbeddingStore

SIZE = 64
BACKBONE = "efficientnet-lite0"


def _by_ref(store: EmbeddingStore) -> dict[str, tuple[str, np.ndarray]]:
    rows, matrix = store.matrix()
    return {r.ref: (r.sha, matrix[i]) for i, r in enumerate(rows)}


def test_ray_writes_the_store_the_in_process_path_writes(
    local_ray: object, photo_folder: Path, tmp_path: Path
) -> None:
    source = EmbedSource(str(photo_folder))
    (photo_folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    t0 = time.monotonic()
    on_ray = run_embed(
        source,
        tmp_path / "ray",
        backbone=BACKBONE,
        image_size=SIZE,
        batch_size=8,
        shard_rows=10,
        ray_address="local",
        actors=2,
    )
    ray_s = time.monotonic() - t0
    here = run_embed(source, tmp_path / "here", backbone=BACKBONE, image_size=SIZE, batch_size=8)
    assert (on_ray.listed, on_ray.embedded, on_ray.shards) == (25, 24, 3)
    assert [Path(r).name for r, _ in on_ray.failed] == ["broken.jpg"]
    assert [Path(r).name for r, _ in here.failed] == ["broken.jpg"]

    a = _by_ref(EmbeddingStore.open(tmp_path / "ray"))
    b = _by_ref(EmbeddingStore.open(tmp_path / "here"))
    assert a.keys() == b.keys() and len(a) == 24
    assert {k: v[0] for k, v in a.items()} == {k: v[0] for k, v in b.items()}
    for ref, (_, vec) in a.items():
        other = b[ref][1]
        cos = float(vec @ other / (np.linalg.norm(vec) * np.linalg.norm(other)))
        assert cos >= 0.9999, (ref, cos)
    assert ray_s < 90, f"the Ray job took {ray_s:.0f} s"
    # embedded in Ray actors, not here (how many of the 2 get work in a job this small depends
    # on how fast each starts: the pool does not wait for a slow actor)
    assert 1 <= len(on_ray.workers) <= 2 and os.getpid() not in on_ray.workers
    assert here.workers == {os.getpid()}

    # resumed on Ray: nothing listed to the actors, nothing written
    again = run_embed(
        source, tmp_path / "ray", backbone=BACKBONE, image_size=SIZE, ray_address="local"
    )
    assert (again.skipped, again.embedded, again.shards) == (24, 0, 0)
    assert local_ray.is_initialized()  # type: ignore[attr-defined]  # the caller's Ray is kept


def test_default_actor_cpus_is_a_node_capped_at_four() -> None:
    from labelwheel.distributed.job import default_actor_cpus

    def node(cpus: float, alive: bool = True) -> dict[str, object]:
        return {"Alive": alive, "Resources": {"CPU": cpus}}

    assert default_actor_cpus([node(2)]) == 2
    assert default_actor_cpus([node(2), node(16)]) == 4
    assert default_actor_cpus([node(1), node(3), node(64, alive=False)]) == 3
    assert default_actor_cpus([]) == 1
    assert default_actor_cpus([{"Alive": True, "Resources": {}}]) == 1


def test_default_ray_job_runs_one_actor_per_node(
    local_ray: object, photo_folder: Path, tmp_path: Path
) -> None:
    """On this machine's local Ray (one node), the default is one actor with the node's CPUs."""
    import ray

    cpus = int(ray.cluster_resources()["CPU"])
    result = run_embed(
        EmbedSource(str(photo_folder)),
        tmp_path / "store",
        backbone=BACKBONE,
        image_size=SIZE,
        batch_size=8,
        ray_address="local",
    )
    assert result.embedded == result.listed > 0 and not result.failed
    assert len(result.workers) == max(1, cpus // min(4, cpus))
