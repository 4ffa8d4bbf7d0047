#!/usr/bin/env python3
"""Keeps one VM's request waiting inside virtdlmd for a disk that another node holds (used by
tests/cluster/bench.sh, the stall case; runs inside a guest).

  stall-waiter.py SOCKET DISK WAIT_MS STOPFILE

Asks virtdlmd at SOCKET for DISK, exclusive, with `wait_ms` = WAIT_MS (the request waits in the
DLM's queue for the holder, then gives up), for a VM whose "QEMU" is a `sleep` child; asks again
as soon as each request is answered, until STOPFILE exists. Prints one JSON line: how many
requests were answered, how (the response kinds), and the shortest and longest time one took.
A request granted means the disk was not held: the bench fails on it.

The client protocol's framing (a 4-byte big-endian length, then the JSON request) is the one in
crates/proto; libvirt's plugin never asks with `wait_ms`, so no other client here sends it.
"""
import json
import os
import socket
import struct
import subprocess
import sys
import time
import uuid


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("virtdlmd closed the connection")
        buf += chunk
    return buf


def call(path, request):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        body = json.dumps(dict(v=1, **request)).encode()
        s.sendall(struct.pack(">I", len(body)) + body)
        (n,) = struct.unpack(">I", recv_exact(s, 4))
        return json.loads(recv_exact(s, n))


def main():
    path, disk, wait_ms, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    qemu = subprocess.Popen(["sleep", "3600"])
    owner = {"uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, "virtdlm-stall-waiter")), "name": "stall-waiter",
             "pid": qemu.pid}
    request = {"op": "acquire", "owner": owner, "resources": [{"kind": "disk", "path": disk}], "wait_ms": wait_ms}
    took, answers = [], {}
    try:
        while not os.path.exists(stop):
            t0 = time.monotonic()
            r = call(path, request)
            took.append((time.monotonic() - t0) * 1e3)
            kind = r.get("result", "?") if r.get("result") != "error" else r.get("code", "error")
            answers[kind] = answers.get(kind, 0) + 1
    finally:
        qemu.kill()
    print(json.dumps({"requests": len(took), "answers": answers, "wait_ms": wait_ms,
                      "shortest_ms": round(min(took), 1) if took else None,
                      "longest_ms": round(max(took), 1) if took else None}))


if __name__ == "__main__":
    main()
