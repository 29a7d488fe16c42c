"""Running generated code: one interface, three backends.

    from evalkit.sandbox import Limits, get_sandbox
    with get_sandbox("process", workers=2) as sb:      # "process" | "docker" | "none"
        result = sb.run(source, Limits(timeout_s=5))
        results = sb.run_many([(source, None), ...])   # parallel, input order kept

Statuses: passed, failed, timeout, oom, output_limit, tampered, sandbox_error. ``passed`` means
the whole program ran to its end; ``tampered`` that it tried to reach outside itself (the
runner's frames, gc, a tracer, ctypes, its own memory, the status channel, or a comparison that
always agrees), with the evidence in ``SandboxResult.evidence``; it counts as failed. A
``sandbox_error`` is the sandbox's failure, never the program's, and must not be scored.
"""

from __future__ import annotations

import os

from evalkit.errors import EvalkitError
from evalkit.sandbox.base import Sandbox
from evalkit.sandbox.result import STATUSES, Limits, SandboxResult

__all__ = ["BACKENDS", "STATUSES", "Limits", "Sandbox", "SandboxResult", "get_sandbox"]

BACKENDS = ("process", "docker", "none")


def get_sandbox(backend: str = "process", workers: int | None = None, *,
                selftest: bool = True, allow_weaker_isolation: bool = False,
                **options: object) -> Sandbox:
    """Start ``workers`` warm sandboxes (default: one per core) and, by default, self-test them.

    Raises EvalkitError, with how to fix it, when the backend cannot run here. Never falls
    back to a weaker backend; the process backend refuses to run without a cgroup per worker
    unless ``allow_weaker_isolation`` (then it warns, and says why in ``weaker_isolation``).
    ``options`` go to the backend (docker: ``image``).
    """
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise EvalkitError(f"sandbox workers must be at least 1, got {workers}")
    if backend == "process":
        from evalkit.sandbox.process import ProcessSandbox

        sandbox: Sandbox = ProcessSandbox(workers, allow_weaker_isolation, **options)
    elif backend == "docker":
        from evalkit.sandbox.docker import DockerSandbox

        sandbox = DockerSandbox(workers, **options)
    elif backend == "none":
        from evalkit.sandbox.process import NoneSandbox

        sandbox = NoneSandbox(workers, **options)
    else:
        raise EvalkitError(f"unknown sandbox backend {backend!r}: "
                           f"pick one of {', '.join(BACKENDS)}")
    if selftest:
        try:
            sandbox.selftest()
        except BaseException:
            sandbox.close()
            raise
    return sandbox
