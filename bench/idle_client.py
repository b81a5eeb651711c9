#!/usr/bin/env python3
"""Idle keep-alive connections for bench/compare.sh: what holding them costs a proxy.

    idle_client.py PORT COUNT PATH PID...

Sums the VmRSS of the proxy's processes PID... (nginx: master and workers) from /proc, opens
COUNT HTTP/1.1 connections to 127.0.0.1:PORT one after the other, makes one GET PATH on each
and reads the response in full, then leaves them all idle and sums VmRSS again 2 s and 10 s
after the last response: a proxy may hold a connection that has just gone quiet differently
from one long idle (NovaEdge: in its task for 1.25 s, then in the parking lot; freed memory
goes back to the system within a second or two), which nginx and HAProxy do not.
Prints one line, `before_kib after_2s_kib after_10s_kib open`, where `open` is how many of the
COUNT connections the proxy still held open after the last figure. Exits non-zero if a
connection or a response fails; a proxy that closes idle connections shows as `open` < COUNT.
"""

import socket
import sys
import time

# Seconds after the last response at which VmRSS is read.
SETTLE_SECONDS = (2.0, 10.0)


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def request(sock, path):
    """Sends one GET and reads its response in full (Content-Length framing)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split()
    if len(status) < 2 or status[1] != "200":
        raise ConnectionError(f"response {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("connection", "").lower() == "close":
        raise ConnectionError("the response closes the connection")
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the response body")
        body += chunk


def still_open(sock):
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    # b"" means the proxy closed it; any byte would be a response nobody asked for.
    return False


def main():
    port, count, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    pids = [int(p) for p in sys.argv[4:]]
    before = rss_kib(pids)
    conns = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            request(sock, path)
        except (OSError, ConnectionError, KeyError, ValueError) as e:
            sys.exit(f"connection {i + 1} of {count} to port {port}: {e}")
        conns.append(sock)
    quiet_since = time.monotonic()
    after = []
    for settle in SETTLE_SECONDS:
        time.sleep(max(0.0, quiet_since + settle - time.monotonic()))
        after.append(rss_kib(pids))
    held = sum(1 for sock in conns if still_open(sock))
    print(before, *after, held)


if __name__ == "__main__":
    main()
