# category: network
# expect: passed
# Tries TCP to a listener on the host's loopback and to the internet, UDP, IPv6 and raw
# sockets.
import socket

PORT = int("@CANARY_PORT@")
attempts = [(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", PORT)),
            (socket.AF_INET, socket.SOCK_STREAM, ("1.1.1.1", 53)),
            (socket.AF_INET, socket.SOCK_STREAM, ("8.8.8.8", 443)),
            (socket.AF_INET6, socket.SOCK_STREAM, ("::1", PORT)),
            (socket.AF_INET, socket.SOCK_DGRAM, ("1.1.1.1", 53)),
            (socket.AF_INET, socket.SOCK_RAW, ("1.1.1.1", 0))]
escaped = []
for family, kind, address in attempts:
    try:
        with socket.socket(family, kind) as s:
            s.settimeout(2)
            if kind == socket.SOCK_STREAM:
                s.connect(address)
            else:
                s.sendto(b"\0" * 12, address)
        escaped.append(address)
    except OSError as exc:
        print("blocked", address, type(exc).__name__)
for address in escaped:
    print("ESCAPED: reached", address)
assert not escaped
