# category: network
# expect: passed
# Name resolution must fail: no resolver, no sockets.
import socket

for name in ("pypi.org", "localhost", "example.com"):
    try:
        found = socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)
    except OSError as exc:
        print("blocked", name, type(exc).__name__)
        continue
    for *_, address in found:
        try:
            socket.create_connection(address[:2], timeout=2).close()
            print("ESCAPED: resolved and reached", name, address)
        except OSError as exc:
            print("resolved but unreachable", name, address, type(exc).__name__)
