#!/usr/bin/env python3
"""Writes an empty qcow2 v3 image, optionally over a backing file, for the libvirt tier when
qemu-img is missing (qemu-utils is not always installed with qemu-system-x86).

    mkqcow2.py IMAGE SIZE_MIB [BACKING_NAME BACKING_FORMAT]

Layout (64 KiB clusters), as qemu-img lays out an empty image: cluster 0 the header, its
backing-format extension and the backing file name; cluster 1 the refcount table; cluster 2
its one refcount block (clusters 0-3 in use); cluster 3 the L1 table (all unallocated).
Format: QEMU's docs/interop/qcow2.txt."""
import struct
import sys

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS


def image(size, backing=None, fmt=None):
    l2_covers = CLUSTER * (CLUSTER // 8)
    l1_size = max(1, -(-size // l2_covers))
    assert l1_size * 8 <= CLUSTER
    header_len = 104
    h = bytearray(header_len)
    struct.pack_into(">4sIQIIQIIQQIIQ", h, 0, b"QFI\xfb", 3, 0, 0, CLUSTER_BITS, size, 0, l1_size,
                     3 * CLUSTER, CLUSTER, 1, 0, 0)
    struct.pack_into(">QQQII", h, 72, 0, 0, 0, 4, header_len)
    if backing:
        f = fmt.encode()
        h += struct.pack(">II", 0xE2792ACA, len(f)) + f
        h += b"\0" * (-len(h) % 8)
        h += b"\0" * 8
        name = backing.encode()
        assert len(name) <= 1023
        struct.pack_into(">QI", h, 8, len(h), len(name))
        h += name
    else:
        h += b"\0" * 8
    out = bytearray(4 * CLUSTER)
    out[: len(h)] = h
    struct.pack_into(">Q", out, CLUSTER, 2 * CLUSTER)  # refcount table -> block
    for i in range(4):
        struct.pack_into(">H", out, 2 * CLUSTER + 2 * i, 1)  # 16-bit refcounts
    return bytes(out)


if __name__ == "__main__":
    path, mib = sys.argv[1], int(sys.argv[2])
    backing = sys.argv[3] if len(sys.argv) > 3 else None
    fmt = sys.argv[4] if len(sys.argv) > 4 else "qcow2"
    with open(path, "wb") as f:
        f.write(image(mib << 20, backing, fmt))
