#!/usr/bin/env python3
"""Known answers for the exchange hash of protocol/src/kex/mod.rs (ExchangeHashInput),
built here from the layouts of RFC 4253 8 (string V_C, V_S, I_C, I_S, K_S, e or Q_C, f or
Q_S, then K as already encoded) and RFC 4419 3 (uint32 min, n, max and mpint p, g after
K_S), with Python's hashlib. The inputs are fixed byte strings; the RFC 3526 group 15
prime comes from gen_dh_vectors.py's formula. Paste the output into the test.
"""
import hashlib

from gen_dh_vectors import prime


def string(b):
    return len(b).to_bytes(4, "big") + b


def mpint(v):
    b = v.to_bytes((v.bit_length() + 7) // 8, "big")
    if b and b[0] & 0x80:
        b = b"\x00" + b
    return string(b)


def h(alg, gex=None):
    parts = [string(b"SSH-2.0-client"), string(b"SSH-2.0-server"),
             string(b"\x14client kexinit"), string(b"\x14server kexinit"),
             string(b"host key blob")]
    if gex:
        (mn, n, mx), p, g = gex
        parts += [x.to_bytes(4, "big") for x in (mn, n, mx)] + [mpint(p), mpint(g)]
    parts += [string(bytes(range(32))), string(bytes(range(32, 64))),
              mpint(int.from_bytes(bytes(range(0x80, 0xa0)), "big"))]
    return hashlib.new(alg, b"".join(parts)).hexdigest()


for alg in ("sha256", "sha384", "sha512"):
    print(f'("{alg}", "{h(alg)}"),')
print(f'("sha256 gex", "{h("sha256", ((2048, 3072, 8192), prime(3072), 2))}"),')
