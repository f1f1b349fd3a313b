#!/usr/bin/env python3
"""Known answers for the finite-field Diffie-Hellman of protocol/src/crypto/dh.rs.

Independent of the Rust code: the RFC 3526 primes are rebuilt here from the formula of
RFC 3526 (p = 2^N - 2^(N-64) - 1 + 2^64 * (floor(2^(N-130) * pi) + c), with pi computed
by Machin's formula in integers), and the exponentiations are Python's pow(). Prints the
SHA-256 of each prime (big-endian, N/8 bytes) and, for fixed exponents x and y, the
SHA-256 of the mpint contents of e = g^x mod p, f = g^y mod p and K = f^x mod p.
Deterministic; paste the output into the tests of protocol/src/crypto/dh.rs.
"""
import hashlib

OFFSETS = {2048: 124476, 3072: 1690314, 4096: 240904, 6144: 929484, 8192: 4743158}
GROUP_NUMBER = {2048: 14, 3072: 15, 4096: 16, 6144: 17, 8192: 18}


def pi_times_2_to(bits):
    """floor(pi * 2^bits), from pi = 16 atan(1/5) - 4 atan(1/239)."""
    guard = 64
    one = 1 << (bits + guard)

    def atan_inv(x):
        total, term, n, sign = 0, one // x, 1, 1
        while term:
            total += sign * (term // n)
            term //= x * x
            n += 2
            sign = -sign
        return total

    return (16 * atan_inv(5) - 4 * atan_inv(239)) >> guard


def prime(n):
    p = 2**n - 2**(n - 64) - 1 + 2**64 * (pi_times_2_to(n - 130) + OFFSETS[n])
    assert p.bit_length() == n
    return p


def mpint_contents(v):
    b = v.to_bytes((v.bit_length() + 7) // 8, "big")
    return b"\x00" + b if b and b[0] & 0x80 else b


def exponent(label):
    """512 bits from SHA-512 of a label, top bit set (as dh.rs makes its exponents)."""
    x = bytearray(hashlib.sha512(label.encode()).digest())
    x[0] |= 0x80
    return bytes(x)


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def main():
    x = exponent("sshr dh vectors/x")
    y = exponent("sshr dh vectors/y")
    print(f'x: "{x.hex()}"')
    print(f'y: "{y.hex()}"')
    xi, yi = int.from_bytes(x, "big"), int.from_bytes(y, "big")
    for n in sorted(OFFSETS):
        p = prime(n)
        e = pow(2, xi, p)
        f = pow(2, yi, p)
        k = pow(f, xi, p)
        assert k == pow(e, yi, p)
        print(f"({GROUP_NUMBER[n]}, \"{sha256(p.to_bytes(n // 8, 'big'))}\", "
              f"\"{sha256(mpint_contents(e))}\", \"{sha256(mpint_contents(f))}\", "
              f"\"{sha256(mpint_contents(k))}\"),")


if __name__ == "__main__":
    main()
