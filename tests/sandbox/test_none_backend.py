"""--sandbox none: the statuses and the pass token without isolation, and loudly so.

It also shows the canaries are not decoration: run without a sandbox, a program that goes for
them is caught.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from evalkit.errors import EvalkitError
from evalkit.sandbox import Limits, Sandbox, get_sandbox
from evalkit.sandbox.selftest import check_sandbox


@pytest.fixture(scope="module")
def none_sandbox() -> Iterator[Sandbox]:
    with get_sandbox("none", workers=1) as sandbox:
        yield sandbox


def test_none_backend_warns_every_time_it_is_made(caplog):
    with caplog.at_level(logging.WARNING, logger="evalkit.sandbox"):
        get_sandbox("none", workers=1).close()
        get_sandbox("none", workers=1).close()
    warnings = [r.message for r in caplog.records if "NO isolation" in r.message]
    assert len(warnings) == 2


def test_none_backend_still_enforces_statuses(none_sandbox):
    assert none_sandbox.run("print('ok')\n").status == "passed"
    assert none_sandbox.run("import sys\nsys.exit(0)\nassert False\n").status == "failed"
    assert none_sandbox.run("import os\nos._exit(0)\n").status == "failed"
    assert none_sandbox.run("while True:\n    pass\n", Limits(timeout_s=3, cpu_s=1)).status \
        == "timeout"
    assert none_sandbox.run("print('x' * 100)\n", Limits(output_bytes=10)).status \
        == "output_limit"


def test_none_backend_still_kills_what_a_program_leaves_behind(none_sandbox):
    source = ("import os, time\nchild = os.fork()\nif child == 0:\n    os.setsid()\n"
              "    time.sleep(3600)\n    os._exit(0)\nprint(child)\n")
    result = none_sandbox.run(source)
    assert result.status == "passed"
    assert not os.path.exists(f"/proc/{int(result.stdout)}")  # killed and reaped


def test_the_canaries_catch_a_program_that_is_not_contained(none_sandbox, canaries):
    attack = (f"import os, socket\n"
              f"print(open({str(canaries.file)!r}).read())\n"
              f"open({str(canaries.file)!r}, 'a').write('pwned')\n"
              f"socket.create_connection(('127.0.0.1', {canaries.port}), timeout=2).close()\n"
              f"print(os.environ.get('EVALKIT_CANARY_SECRET'))\n"
              f"os.kill({canaries.process.pid}, 9)\n")
    result = none_sandbox.run(attack)
    assert result.status == "passed", result.detail
    problems = " | ".join(canaries.problems(result))
    for expected in ("canary file", "connection", "canary process", "canary secret"):
        assert expected in problems


@pytest.mark.skipif(os.geteuid() != 0, reason="the none backend runs programs as root only here")
def test_the_selftest_rejects_a_sandbox_that_isolates_nothing(none_sandbox, monkeypatch):
    monkeypatch.setattr(none_sandbox, "backend", "process")  # judged as if it claimed isolation
    # Whichever it meets first: this machine's network (where it has one), or root.
    with pytest.raises(EvalkitError, match=r"connection was not blocked|run with privileges"):
        check_sandbox(none_sandbox)
