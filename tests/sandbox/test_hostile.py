"""The hostile suite (sandbox/hostile/*.py) against both backends, next to host canaries.

Each program must get the status its header names, and afterwards: the canary file and the
project are unchanged, the canary process is alive, the canary port saw no connection, no secret
reached the output, no process of the program is left (seen from outside the sandbox), and the
same worker still runs a plain program.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evalkit.sandbox import Limits, Sandbox, get_sandbox
from evalkit.sandbox.selftest import hostile_programs, leftover_processes, run_hostile

PROGRAMS = hostile_programs()
# Every category sandbox.md lists is in the suite.
CATEGORIES = {"cpu", "processes", "memory", "filesystem", "secrets", "network", "signals",
              "mounts", "namespaces", "output", "disk", "early exit", "forgery", "privileges"}


def test_the_suite_covers_every_hostile_category():
    assert {p.category for p in PROGRAMS} == CATEGORIES
    assert len(PROGRAMS) >= 25


@pytest.fixture(scope="module", params=["process", "docker"])
def one_worker(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """One worker, so the check that follows each program lands on the worker it attacked."""
    if request.param == "docker":
        request.getfixturevalue("docker_engine")
    with get_sandbox(request.param, workers=1) as sandbox:
        yield sandbox


@pytest.mark.slow
@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_hostile_program_is_contained(one_worker, program, canaries):
    outcome = run_hostile(one_worker, program, canaries)
    assert outcome.result.status == program.expect, (
        f"{outcome.result.detail}\n{outcome.result.stdout[-500:]}\n{outcome.result.stderr[-500:]}")
    assert outcome.problems == []


@pytest.mark.slow
def test_hostile_programs_do_not_disturb_honest_ones_running_beside_them(sandbox, canaries):
    hostile = {p.name: p for p in PROGRAMS}
    attackers = ["fork_bomb", "kill_everything", "fill_tmp", "memory_gradual", "thread_bomb",
                 "daemonize"]
    honest = "import time\nfor i in range(5):\n    time.sleep(0.1)\nprint(sum(range(10)))\n"
    batch = []
    for name in attackers:
        batch += [(hostile[name].source(canaries), hostile[name].limits), (honest, None)]
    results = sandbox.run_many(batch)
    for name, result in zip(attackers, results[0::2], strict=True):
        assert result.status == hostile[name].expect, (name, result.detail)
    for result in results[1::2]:
        assert (result.status, result.stdout) == ("passed", "45\n"), result.detail
    assert canaries.problems() == []
    assert leftover_processes(sandbox) == []


LITTER = """
import os
for d in range(60):
    os.makedirs(f"/tmp/litter/{d}")
    for f in range(1000):
        open(f"/tmp/litter/{d}/{f}", "w").close()
    os.chmod(f"/tmp/litter/{d}", 0)  # unreadable, to make the cleanup work for it
print("left 60000 files")
"""


@pytest.mark.slow
def test_the_next_program_is_not_charged_for_what_the_last_one_left(one_worker):
    litter = one_worker.run(LITTER, Limits(timeout_s=60, cpu_s=30))
    assert litter.status == "passed", litter.detail
    # Removing 60,000 files takes longer than this program's whole wall limit, and more CPU
    # than it is allowed to have used: neither may be charged to it.
    after = one_worker.run("import os\nprint(os.listdir('/tmp'))\n", Limits(timeout_s=0.3))
    assert (after.status, after.stdout) == ("passed", "['work']\n"), after.detail
    assert after.cpu_s < 0.2
