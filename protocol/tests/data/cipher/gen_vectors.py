#!/usr/bin/env python3
"""Known-answer vectors for the SSH packet protection in protocol/src/cipher.rs.

An implementation independent of the Rust code: the OpenSSH constructions are built here
from the primitives of the Python `cryptography` package (OpenSSL underneath):

* chacha20-poly1305@openssh.com (OpenSSH PROTOCOL.chacha20poly1305): 64-byte key,
  K_2 = key[0:32] (payload + Poly1305 key), K_1 = key[32:64] (length only); ChaCha20 in the
  original 64-bit nonce / 64-bit counter layout, nonce = uint64 sequence number (big-endian);
  Poly1305 key = first 32 bytes of K_2 block 0; body from block 1; tag over enc_len || enc_body.
  OpenSSL's ChaCha20 takes a 16-byte IV that is state words 12..15, so the 64-bit-nonce variant
  is IV = counter (8 bytes little-endian) || nonce (8 bytes).
* aes{128,256}-gcm@openssh.com (RFC 5647): clear length = AAD, nonce = 4-byte fixed part ||
  8-byte invocation counter, incremented (mod 2^64) after every packet.
* aes{128,256}-ctr (RFC 4344) with hmac-sha2-{256,512} (RFC 6668) or hmac-sha1 (RFC 4253 6.4):
  MAC over uint32 seq || plaintext packet, whole packet encrypted; the CTR stream continues
  across packets.
* ...-etm@openssh.com (OpenSSH PROTOCOL 1.6): length clear, body encrypted, MAC over
  uint32 seq || length || encrypted body.

Run: python3 gen_vectors.py > vectors.rs.txt, and paste the output into the
FRAMING_VECTORS table of the tests in protocol/src/cipher.rs. The output is deterministic.
"""
import hashlib
import sys

from cryptography.hazmat.primitives import hashes, hmac, poly1305
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def material(label, n):
    """Deterministic pseudo-random bytes (SHA-256 in counter mode over a label)."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"sshr cipher vectors/{label}/{i}".encode()).digest()
        i += 1
    return out[:n]


# --- primitives --------------------------------------------------------------------------


def chacha20_djb(key, nonce8, counter, data):
    """Original ChaCha20 (64-bit nonce, 64-bit block counter)."""
    assert len(key) == 32 and len(nonce8) == 8
    iv = counter.to_bytes(8, "little") + nonce8
    enc = Cipher(algorithms.ChaCha20(key, iv), mode=None).encryptor()
    return enc.update(data) + enc.finalize()


def poly1305_tag(key, data):
    return poly1305.Poly1305.generate_tag(key, data)


def hmac_tag(mac, key, data):
    if mac.startswith("hmac-sha2-256"):
        hash_alg = hashes.SHA256()
    elif mac.startswith("hmac-sha2-512"):
        hash_alg = hashes.SHA512()
    else:
        assert mac.startswith("hmac-sha1")
        hash_alg = hashes.SHA1()
    h = hmac.HMAC(key, hash_alg)
    h.update(data)
    return h.finalize()


def self_check():
    """Make sure the primitives (and the ChaCha20 IV layout above) are what we think they are."""
    # draft-agl-tls-chacha20poly1305 / draft-strombergson-chacha-test-vectors: 64-bit nonce.
    ks = chacha20_djb(bytes(range(32)), bytes(range(8)), 0, bytes(64))
    assert ks.hex() == (
        "f798a189f195e66982105ffb640bb7757f579da31602fc93ec01ac56f85ac3c1"
        "34a4547b733b46413042c9440049176905d3be59ea1c53f15916155c2be8241a"
    ), ks.hex()
    ks = chacha20_djb(bytes(32), bytes.fromhex("0100000000000000"), 0, bytes(64))
    assert ks.hex().startswith("ef3fdfd6c61578fbf5cf35bd3dd33b8009631634d21e42ac33960bd138e50d32"), ks.hex()
    # RFC 8439 2.5.2
    tag = poly1305_tag(
        bytes.fromhex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b"),
        b"Cryptographic Forum Research Group",
    )
    assert tag.hex() == "a8061dc1305136c6c22b8baf0c0127a9", tag.hex()
    # RFC 4231 test case 2
    assert hmac_tag("hmac-sha2-256", b"Jefe", b"what do ya want for nothing?").hex() == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    # RFC 2202 test case 2
    assert hmac_tag("hmac-sha1", b"Jefe", b"what do ya want for nothing?").hex() == (
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    )


# --- SSH constructions -------------------------------------------------------------------

CIPHERS = {
    # name: (key_len, iv_len, block_size, aead)
    "chacha20-poly1305@openssh.com": (64, 0, 8, True),
    "aes128-gcm@openssh.com": (16, 12, 16, True),
    "aes256-gcm@openssh.com": (32, 12, 16, True),
    "aes128-ctr": (16, 16, 16, False),
    "aes256-ctr": (32, 16, 16, False),
}
MACS = {
    # name: (key_len, tag_len, etm)
    "hmac-sha2-256-etm@openssh.com": (32, 32, True),
    "hmac-sha2-512-etm@openssh.com": (64, 64, True),
    "hmac-sha2-256": (32, 32, False),
    "hmac-sha2-512": (64, 64, False),
    "hmac-sha1-etm@openssh.com": (20, 20, True),
    "hmac-sha1": (20, 20, False),
}


class Sealer:
    def __init__(self, cipher, mac, key, iv, mac_key):
        self.cipher, self.mac, self.key, self.iv, self.mac_key = cipher, mac, key, iv, mac_key
        if cipher.startswith("aes") and cipher.endswith("-ctr"):
            # One encryptor for the whole direction: the counter continues across packets.
            self.ctr = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
        if "gcm" in cipher:
            self.fixed = iv[:4]
            self.invocation = int.from_bytes(iv[4:], "big")

    def length_in_alignment(self):
        return self.cipher.endswith("-ctr") and not MACS[self.mac][2]

    def seal(self, seq, packet):
        """packet = uint32 length || body (plaintext). Returns the bytes on the wire."""
        length, body = packet[:4], packet[4:]
        assert int.from_bytes(length, "big") == len(body)
        if self.cipher == "chacha20-poly1305@openssh.com":
            k2, k1 = self.key[:32], self.key[32:]
            nonce = seq.to_bytes(8, "big")
            enc_len = chacha20_djb(k1, nonce, 0, length)
            poly_key = chacha20_djb(k2, nonce, 0, bytes(32))
            enc_body = chacha20_djb(k2, nonce, 1, body)
            return enc_len + enc_body + poly1305_tag(poly_key, enc_len + enc_body)
        if "gcm" in self.cipher:
            nonce = self.fixed + self.invocation.to_bytes(8, "big")
            self.invocation = (self.invocation + 1) % (1 << 64)
            ct_tag = AESGCM(self.key).encrypt(nonce, body, length)
            return length + ct_tag
        seq_bytes = seq.to_bytes(4, "big")
        if MACS[self.mac][2]:  # encrypt-then-MAC: length clear
            enc_body = self.ctr.update(body)
            tag = hmac_tag(self.mac, self.mac_key, seq_bytes + length + enc_body)
            return length + enc_body + tag
        tag = hmac_tag(self.mac, self.mac_key, seq_bytes + packet)
        return self.ctr.update(packet) + tag


def make_packet(payload, block, length_in_alignment, tag):
    """RFC 4253 6: uint32 packet_length || byte padding_length || payload || padding."""
    covered = 1 + len(payload) + (4 if length_in_alignment else 0)
    pad = block - covered % block
    if pad < 4:
        pad += block
    padding = material(f"padding/{tag}", pad)
    body = bytes([pad]) + payload + padding
    return len(body).to_bytes(4, "big") + body


def vector(label, cipher, mac, iv=None, seqs=(3, 4, 5), payload_lens=(9, 47, 130)):
    key_len, iv_len, block, _aead = CIPHERS[cipher]
    key = material(f"{label}/key", key_len)
    if iv is None:
        iv = material(f"{label}/iv", iv_len)
    assert len(iv) == iv_len
    mac_key = material(f"{label}/mac-key", MACS[mac][0]) if mac else b""
    s = Sealer(cipher, mac, key, iv, mac_key)
    packets = []
    for i, (seq, n) in enumerate(zip(seqs, payload_lens)):
        payload = material(f"{label}/payload/{i}", n)
        plain = make_packet(payload, block, s.length_in_alignment(), f"{label}/{i}")
        packets.append((seq, plain, s.seal(seq, plain)))
    return dict(label=label, cipher=cipher, mac=mac, key=key, iv=iv, mac_key=mac_key, packets=packets)


def all_vectors():
    vs = [
        vector("chacha", "chacha20-poly1305@openssh.com", None),
        # Sequence number wrap: nonce 0x00000000ffffffff, then 0.
        vector("chacha-wrap", "chacha20-poly1305@openssh.com", None, seqs=(0xFFFFFFFE, 0xFFFFFFFF, 0)),
        vector("gcm128", "aes128-gcm@openssh.com", None),
        # Invocation counter wraps within its 64 bits; the fixed part does not change.
        vector("gcm256-wrap", "aes256-gcm@openssh.com", None,
               iv=bytes.fromhex("a1b2c3d4") + bytes.fromhex("fffffffffffffffe")),
    ]
    for c in ("aes128-ctr", "aes256-ctr"):
        for m in MACS:
            label = f"{c}+{m}"
            iv = None
            if c == "aes128-ctr" and m == "hmac-sha2-256":
                # Low 64 bits of the counter overflow into the high half within the first packet.
                iv = material(label + "/iv", 8) + bytes.fromhex("fffffffffffffffe")
            if c == "aes256-ctr" and m == "hmac-sha2-512-etm@openssh.com":
                # Whole 128-bit counter wraps.
                iv = bytes.fromhex("fffffffffffffffffffffffffffffffe")
            vs.append(vector(label, c, m, iv=iv))
    return vs


def main():
    self_check()
    out = sys.stdout
    out.write("// Generated by protocol/tests/data/cipher/gen_vectors.py; do not edit.\n")
    for v in all_vectors():
        mac = f'Some("{v["mac"]}")' if v["mac"] else "None"
        out.write("FramingVector {\n")
        out.write(f'    label: "{v["label"]}",\n')
        out.write(f'    cipher: "{v["cipher"]}",\n')
        out.write(f"    mac: {mac},\n")
        out.write(f'    key: "{v["key"].hex()}",\n')
        out.write(f'    iv: "{v["iv"].hex()}",\n')
        out.write(f'    mac_key: "{v["mac_key"].hex()}",\n')
        out.write("    packets: &[\n")
        for seq, plain, sealed in v["packets"]:
            out.write(f'        ({seq:#x}, "{plain.hex()}", "{sealed.hex()}"),\n')
        out.write("    ],\n")
        out.write("},\n")


if __name__ == "__main__":
    main()
