"""N engine replicas as Ray actors behind the one ``Backend`` interface.

The runner does not know it is distributed: ``generate``/``loglikelihood`` yield
``(request index, results)`` as requests finish, exactly like a local engine, so the driver's
run store, generation cache, resume and "no item twice" rules are the local ones. What this
module adds:

- placement: each request goes to replica ``shard_of(doc id, N)`` (evalkit.scale.shard), never
  to whichever replica is free, so a rerun gives every replica the same items;
- streaming: each replica runs its share as one Ray streaming generator, so its engine batches
  all of them (continuous batching) and every finished item comes back at once;
- replacement: a replica whose actor dies (OOM, node lost, kill -9) is restarted and gets the
  requests of its share that had not come back; results already yielded are never yielded
  again, and a replica that keeps dying stops the run with a clear error.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.models.base import Backend
from evalkit.scale.shard import shard_of

MAX_REPLACEMENTS = 3  # per replica and call: a replica that dies more often is broken, not unlucky


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect this process to Ray: ``address`` "local" (or None) starts a private local
    cluster, anything else ("auto", "ray://host:10001", "host:6379") joins an existing one.
    Returns whether this call started the cluster (the caller then shuts it down)."""
    try:
        import ray
    except ImportError:
        raise EvalkitError("--ray needs Ray: pip install 'evalkit[ray]' (ray==2.60.0)") from None

    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    try:
        if address in (None, "", "local"):
            ray.init(num_cpus=num_cpus, **quiet)
            return True
        ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise EvalkitError(f"cannot connect to the Ray cluster at {address}: "
                           f"{' '.join(str(exc).split())[:300]}") from None
    return False


class _Replica:
    """One engine (base model + any adapters), living in a Ray actor process."""

    def __init__(self, backend: str, checkpoint: Any, adapters: list, seed: int,
                 options: dict) -> None:
        from evalkit.models import load_backend

        self.backend = load_backend(backend, checkpoint, adapters=adapters, seed=seed, **options)

    def close(self) -> None:
        self.backend.close()  # the engine's own processes go with it, not orphaned by a kill

    def ready(self) -> tuple[int, dict]:
        return os.getpid(), self.backend.info()

    def run(self, method: str, requests: list) -> Iterator[tuple[int, list]]:
        # A plain loop, not `yield from`: Ray resumes the generator with send(), which
        # `yield from` would pass on to the backend's own iterators (a zip has no send).
        for item in getattr(self.backend, method)(requests):  # noqa: UP028
            yield item


class RayReplicas(Backend):
    """``replicas`` engines of one checkpoint (and its adapters) on a Ray cluster."""

    def __init__(self, backend: str, version: str, checkpoint: Any, adapters: Sequence[Any],
                 seed: int, options: dict, replicas: int, address: str | None) -> None:
        super().__init__(name=backend, version=version)
        if replicas < 1:
            raise EvalkitError(f"--replicas must be at least 1, got {replicas}")
        self.spec = (backend, checkpoint, list(adapters), seed, options)
        self.options, self.address = options, address
        self.actors: list[Any] = [None] * replicas
        self.pids: list[int] = [0] * replicas
        self.replaced = 0
        self.owns_cluster = connect(address, num_cpus=max(replicas, os.cpu_count() or 1))
        try:
            self.resources = self._resources(replicas,
                                             int(options.get("tensor_parallel_size") or 1))
            for r in range(replicas):
                self._start(r)
        except BaseException:
            self.close()
            raise

    def _resources(self, replicas: int, tp: int) -> dict:
        """One CPU per replica on a CPU cluster; ``tp`` GPUs per replica when there are GPUs
        (Ray then sets CUDA_VISIBLE_DEVICES so each engine sees only its own)."""
        import ray

        total = ray.cluster_resources()
        need, unit = ("GPU", tp) if total.get("GPU") else ("CPU", 1)
        if total.get(need, 0) < replicas * unit:
            raise EvalkitError(f"the Ray cluster has {int(total.get(need, 0))} {need}(s); "
                               f"--replicas {replicas} needs {replicas * unit}")
        return {"num_gpus": tp} if need == "GPU" else {"num_cpus": 1}

    def _start(self, r: int) -> None:
        import ray

        actor = ray.remote(**self.resources, max_restarts=0)(_Replica).remote(*self.spec)
        try:
            self.pids[r], info = ray.get(actor.ready.remote())
        except ray.exceptions.RayError as exc:
            ray.kill(actor)
            raise EvalkitError(f"replica {r} could not start its engine: "
                               f"{' '.join(str(exc).split())[-300:]}") from None
        self.actors[r], self.engine_info = actor, info

    def generate(self, requests: Sequence[Any]) -> Iterator[tuple[int, list]]:
        return self._run("generate", requests)

    def loglikelihood(self, requests: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        return self._run("loglikelihood", requests)

    def _run(self, method: str, requests: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        import ray

        n = len(self.actors)
        shares: dict[int, list[int]] = {r: [] for r in range(n)}
        for i, request in enumerate(requests):
            shares[shard_of(request.item or str(i), n)].append(i)
        done: set[int] = set()
        streams: dict[Any, tuple[int, list[int]]] = {}
        deaths = dict.fromkeys(range(n), 0)

        def submit(r: int, share: list[int]) -> None:
            if share:
                stream = self.actors[r].run.remote(method, [requests[i] for i in share])
                streams[stream] = (r, share)

        for r, share in shares.items():
            submit(r, share)
        while streams:
            [stream], _ = ray.wait(list(streams), num_returns=1)
            r, share = streams[stream]
            try:
                j, result = ray.get(next(stream))
            except StopIteration:
                del streams[stream]
                continue
            except ray.exceptions.RayActorError:
                del streams[stream]
                deaths[r] += 1
                if deaths[r] > MAX_REPLACEMENTS:
                    raise EvalkitError(f"replica {r} died {deaths[r]} times; giving up (the "
                                       "finished items are saved: rerun to resume)") from None
                print(f"replica {r} died; starting a new one for its "
                      f"{len([i for i in share if i not in done])} unfinished item(s)",
                      file=sys.stderr)
                self._start(r)
                self.replaced += 1
                submit(r, [i for i in share if i not in done])
                continue
            if share[j] not in done:
                done.add(share[j])
                yield share[j], result

    def info(self) -> dict:
        return {**getattr(self, "engine_info", {}), "name": self.name, "engine_id": self.engine_id,
                "replicas": len(self.actors), "ray_address": self.address or "local"}

    def close(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        live = [a for a in self.actors if a is not None]
        with contextlib.suppress(ray.exceptions.RayError):
            ray.get([a.close.remote() for a in live], timeout=120)
        for actor in live:
            ray.kill(actor)
        self.actors = [None] * len(self.actors)
        if self.owns_cluster:
            ray.shutdown()

