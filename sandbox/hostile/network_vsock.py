# category: network
# expect: passed
# AF_VSOCK is not network-namespaced: in a VM it reaches the hypervisor side.
import socket

for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    try:
        sock = socket.socket(socket.AF_VSOCK, kind)
    except OSError as exc:
        print("blocked", exc.errno)
        continue
    print("ESCAPED: created an AF_VSOCK socket")
    try:
        sock.bind((socket.VMADDR_CID_ANY, 5000))
        print("ESCAPED: bound AF_VSOCK")
    except OSError:
        pass
