"""Code execution across a Ray cluster: one warm sandbox pool per node, programs as Ray tasks.

Each alive node gets one ``_NodePool`` actor pinned to it (hard node affinity) that opens the
same sandbox as a local run (``get_sandbox``: process, docker or none, with the same limits) and
self-tests it before anything runs there; a node whose self-test fails is refused and named on
stderr, never used. A program goes to the node pool with the fewest programs in flight; if that
node dies, the program reruns on another one (a program's result depends on nothing but its
source, so a rerun is safe). The pool actors reserve no CPU: the programs are short and the
replicas' engines must still be placeable on a small cluster.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from evalkit.errors import EvalkitError


class _NodePool:
    def __init__(self, backend: str, workers: int | None, allow_weaker_isolation: bool) -> None:
        import os

        from evalkit.sandbox import get_sandbox

        self.sandbox = get_sandbox(backend, workers=workers or os.cpu_count(),  # self-tests
                                   allow_weaker_isolation=allow_weaker_isolation)

    def size(self) -> int:
        return self.sandbox.workers

    def run(self, source: str, limits: Any) -> Any:
        return self.sandbox.run(source, limits)

    def close(self) -> None:
        self.sandbox.close()


class RaySandbox:
    """The ``Sandbox`` calls the scorers use (run, run_many, selftest, close, workers)."""

    backend = "ray"

    def __init__(self, backend: str, workers_per_node: int | None = None,
                 allow_weaker_isolation: bool = False) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        actors = {}
        for node in nodes:
            cpus = int(node.get("Resources", {}).get("CPU", 0)) or 1
            actors[node["NodeID"]] = ray.remote(num_cpus=0, max_concurrency=4 * cpus)(
                _NodePool).options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                    node["NodeID"], soft=False)).remote(backend, workers_per_node or cpus,
                                                        allow_weaker_isolation)
        self.pools: dict[Any, int] = {}
        for node_id, actor in actors.items():
            try:
                self.pools[actor] = ray.get(actor.size.remote())
            except ray.exceptions.RayError as exc:
                ray.kill(actor)
                print(f"warning: node {node_id[:12]} refused: its {backend} sandbox failed the "
                      f"self-test ({' '.join(str(exc).split())[-200:]})", file=sys.stderr)
        if not self.pools:
            raise EvalkitError(f"no node of the Ray cluster has a working {backend} sandbox")
        self.in_flight = dict.fromkeys(self.pools, 0)
        self.lock = threading.Lock()

    @property
    def workers(self) -> int:
        return sum(self.pools.values())

    def run(self, source: str, limits: Any = None) -> Any:
        import ray

        while True:
            with self.lock:
                if not self.in_flight:
                    raise EvalkitError("every node of the Ray cluster with a sandbox is gone")
                pool = min(self.in_flight, key=self.in_flight.__getitem__)
                self.in_flight[pool] += 1
            try:
                return ray.get(pool.run.remote(source, limits))
            except ray.exceptions.RayActorError:
                with self.lock:  # the node (or its pool) died: never send it work again
                    self.in_flight.pop(pool, None)
                    self.pools.pop(pool, None)
                continue
            finally:
                with self.lock:
                    if pool in self.in_flight:
                        self.in_flight[pool] -= 1

    def run_many(self, programs: list[tuple[str, Any]]) -> list[Any]:
        from concurrent.futures import ThreadPoolExecutor

        if not programs:
            return []
        with ThreadPoolExecutor(min(self.workers, len(programs))) as pool:
            return list(pool.map(lambda job: self.run(*job), programs))

    def selftest(self) -> None:
        """Every pool self-tested on its own node when it started."""

    def close(self) -> None:
        import contextlib

        import ray

        if not ray.is_initialized():
            return
        with contextlib.suppress(ray.exceptions.RayError):
            ray.get([p.close.remote() for p in self.pools], timeout=60)
        for pool in self.pools:
            ray.kill(pool)
        self.pools = {}
