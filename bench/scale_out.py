"""Ray scale-out: items/s with 1 vs 2 engine replicas, and what the driver adds per item.

Three backends of the same checkpoint are started once (start-up is not timed): a local engine
(no Ray), 1 Ray replica, 2 Ray replicas. Each round runs the same GSM8K items uncached through
``run_task`` on each, interleaved (local, ray1, ray2, local, ...), so machine noise hits all
three alike. Reported: items/s per layout, and Ray's overhead at 1 replica as
(t_ray1 - t_local) per item and as a share of generation time.

Separately it measures Ray's streaming cost per item in isolation: an actor that yields
already-made results (``Completion`` lists like an engine's) to the driver loop of
``RayReplicas`` (ray.wait + next + ray.get + unpickle), which is the per-item cost the
capacity model scales.

    EVALKIT_DATA_DIR=../shared/data python bench/scale_out.py --backend hf --n 24
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path


def streaming_cost(items: int) -> float:
    """Seconds of driver time per item streamed back from a replica actor."""
    import ray

    from evalkit.models.base import Completion

    @ray.remote(num_cpus=0)
    class Echo:
        def run(self, n: int):
            c = [Completion(text="x" * 400, finish_reason="stop", n_prompt_tokens=800,
                            n_completion_tokens=100)]
            for j in range(n):
                yield j, c

    actor = Echo.remote()
    list(ray.get(list(actor.run.remote(10))))  # warm
    t0 = time.perf_counter()
    stream = actor.run.remote(items)
    got = 0
    while True:
        ray.wait([stream], num_returns=1)
        try:
            ray.get(next(stream))
        except StopIteration:
            break
        got += 1
    elapsed = time.perf_counter() - t0
    ray.kill(actor)
    assert got == items
    return elapsed / items


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--backend", default="hf")
    ap.add_argument("--n", type=int, default=24, help="GSM8K items per run")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    from evalkit.checkpoints import resolve
    from evalkit.run.runner import RunOptions, open_backend, run_task
    from evalkit.scale.ray_backend import connect

    ckpt = resolve(args.model)
    # 3 logical CPUs: the 1- and 2-replica layouts are held at once (2 physical cores here).
    connect("local", num_cpus=3)
    base = {"backend": args.backend, "limit": args.n, "max_tokens": args.max_tokens,
            "progress": False, "use_cache": False}
    extra = {"hf": {"batch_size": 8, "dtype": "auto"},
             "vllm": {"tensor_parallel_size": 1, "max_model_len": 2048, "dtype": "auto"}}
    layouts = {"local": {}, "ray-1": {"ray": "local", "replicas": 1},
               "ray-2": {"ray": "local", "replicas": 2}}
    times: dict[str, list[float]] = {k: [] for k in layouts}
    with tempfile.TemporaryDirectory() as tmp:
        backends = {}
        with contextlib.ExitStack() as stack:
            for name, kw in layouts.items():
                opts = RunOptions(**base, **kw, out_dir=Path(tmp), backend_options=extra[
                    args.backend])
                backends[name] = (stack.enter_context(open_backend(ckpt, opts)), opts)
                backends[name][0].start()
            for r in range(args.rounds):
                for name, (backend, opts) in backends.items():
                    opts.out_dir = Path(tmp) / f"{name}-{r}"
                    t0 = time.perf_counter()
                    run_task(ckpt, "gsm8k", opts, backend=backend)
                    times[name].append(time.perf_counter() - t0)
                    print(f"round {r} {name}: {times[name][-1]:.2f} s", flush=True)
            samples = {name: (Path(tmp) / f"{name}-0").rglob("samples.jsonl")
                       for name in layouts}
            data = {name: next(s).read_bytes() for name, s in samples.items()}
        per_item = streaming_cost(2000)
    t = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "model": args.model, "backend": args.backend, "items": args.n,
        "max_tokens": args.max_tokens, "rounds": args.rounds,
        "seconds": {k: round(v, 3) for k, v in t.items()},
        "items_per_s": {k: round(args.n / v, 3) for k, v in t.items()},
        "speedup_2_vs_1_replica": round(t["ray-1"] / t["ray-2"], 3),
        "ray1_overhead_per_item_ms": round(1000 * (t["ray-1"] - t["local"]) / args.n, 2),
        "ray1_overhead_share": round((t["ray-1"] - t["local"]) / t["local"], 4),
        "streaming_cost_per_item_ms": round(1000 * per_item, 3),
        "samples_identical": len(set(data.values())) == 1,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
