"""Ask a DNS server for an A record over UDP; print the addresses, exit 1 on no answer.

Used by the platform scripts to prove that cluster DNS answers end to end (kube-proxy
rules, pod network, CoreDNS, Kubernetes API) before `up` reports ready. Standard library
only: it runs before the project's virtualenv exists.

    python3 dns_probe.py SERVER NAME [TIMEOUT]
"""

from __future__ import annotations

import random
import socket
import struct
import sys


def query(server: str, name: str, timeout: float, port: int = 53) -> list[str]:
    qid = random.randrange(1 << 16)
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    packet = header + qname + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, port))
        data, _ = sock.recvfrom(4096)
    rid, flags, _qd, ancount, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
    if rid != qid or flags & 0x000F:
        return []
    pos = 12 + len(qname) + 4
    found = []
    for _ in range(ancount):
        # Names in answers are compression pointers (2 bytes) or labels.
        while data[pos] != 0 and data[pos] & 0xC0 != 0xC0:
            pos += data[pos] + 1
        pos += 2 if data[pos] & 0xC0 == 0xC0 else 1
        rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", data[pos : pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            found.append(socket.inet_ntoa(data[pos : pos + 4]))
        pos += rdlen
    return found


def main() -> int:
    server, name = sys.argv[1], sys.argv[2]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    try:
        addresses = query(server, name, timeout)
    except OSError as exc:
        print(f"no answer from {server}: {exc}", file=sys.stderr)
        return 1
    if not addresses:
        print(f"{server} has no A record for {name}", file=sys.stderr)
        return 1
    print(" ".join(addresses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
