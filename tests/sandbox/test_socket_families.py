"""Sockets are an allow-list: AF_UNIX only, on both backends.

One program per backend tries every family number the kernel knows (and some it does not yet);
each family is then its own test. The filter answers EACCES, which no kernel gives for a
missing family (that is EAFNOSUPPORT), so a test passes only where the filter itself refused.
"""

from __future__ import annotations

import errno
import json
import socket

import pytest

from evalkit.sandbox import Sandbox

NAMED = {"INET": 2, "INET6": 10, "NETLINK": 16, "PACKET": 17, "VSOCK": 40, "BLUETOOTH": 31,
         "ALG": 38, "XDP": 44, "CAN": 29, "TIPC": 30, "RDS": 21, "KEY": 15, "SMC": 43,
         "QIPCRTR": 42, "MCTP": 45, "KCM": 41, "PPPOX": 24, "IB": 27, "APPLETALK": 5,
         "AX25": 3, "X25": 9, "NFC": 39}
# Every family number up to a few past AF_MAX (46 on Linux 6.x), 1 (AF_UNIX) aside.
FAMILIES = {**{f"family_{n}": n for n in range(2, 50)}, **NAMED}

PROBE = """
import json, socket
found = {}
for family in range(0, 50):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            socket.socket(family, kind).close()
            found[family] = "created"
            break
        except OSError as exc:
            found[family] = exc.errno
a, b = socket.socketpair()
a.sendall(b"unix ok")
print(json.dumps({"families": found, "unix": b.recv(16).decode()}))
"""


@pytest.fixture(scope="module")
def probed() -> dict[str, dict]:
    return {}


def _probe(sandbox: Sandbox, cache: dict[str, dict]) -> dict:
    if sandbox.backend not in cache:
        result = sandbox.run(PROBE)
        assert result.status == "passed", result.detail + result.stderr[-500:]
        cache[sandbox.backend] = json.loads(result.stdout)
    return cache[sandbox.backend]


@pytest.mark.parametrize("family", FAMILIES.values(), ids=FAMILIES.keys())
def test_creating_a_socket_of_this_family_fails(sandbox, probed, family):
    found = _probe(sandbox, probed)
    assert found["families"][str(family)] == errno.EACCES


def test_unix_sockets_still_work(sandbox, probed):
    assert _probe(sandbox, probed)["unix"] == "unix ok"


def test_the_named_families_are_the_kernels_numbers():
    for name, number in NAMED.items():
        assert getattr(socket, f"AF_{name}", number) == number
