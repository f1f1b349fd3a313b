#!/usr/bin/env python3
"""Extract the ML-KEM-768 known answers of mlkem768-acvp.txt from NIST's ACVP sample
vectors: usnistgov/ACVP-Server, gen-val/json-files/ML-KEM-keyGen-FIPS203 and
ML-KEM-encapDecap-FIPS203, internalProjection.json at commit 65370b8 (the copies in
RustCrypto/KEMs, ml-kem/tests/key-gen.json and encap-decap.json).

Run: python3 extract_mlkem_vectors.py key-gen.json encap-decap.json > mlkem768-acvp.txt
"""
import hashlib
import json
import sys


def group(doc, function=None):
    for g in doc["testGroups"]:
        if g["parameterSet"] == "ML-KEM-768" and g.get("function", function) == function:
            return g
    raise SystemExit("no ML-KEM-768 group")


def main():
    keygen = json.load(open(sys.argv[1]))
    encap_decap = json.load(open(sys.argv[2]))
    out = sys.stdout
    out.write("# ML-KEM-768 (FIPS 203) known answers: NIST ACVP sample vectors, usnistgov/ACVP-Server\n")
    out.write("# gen-val/json-files/ML-KEM-{keyGen,encapDecap}-FIPS203/internalProjection.json at\n")
    out.write("# commit 65370b8, by protocol/tests/data/kex/extract_mlkem_vectors.py. Hex; *_sha256\n")
    out.write("# is the SHA-256 of a long output.\n")
    t = group(keygen)["tests"][0]
    out.write(f"keygen.tcId {t['tcId']}\n")
    for k in ("d", "z"):
        out.write(f"keygen.{k} {t[k].lower()}\n")
    for k in ("ek", "dk"):
        out.write(f"keygen.{k}_sha256 {hashlib.sha256(bytes.fromhex(t[k])).hexdigest()}\n")
    for i, t in enumerate(group(encap_decap, "encapsulation")["tests"][:2]):
        assert t["reason"] == "no modification"
        out.write(f"encap{i}.tcId {t['tcId']}\n")
        for k in ("ek", "m", "c", "k"):
            out.write(f"encap{i}.{k} {t[k].lower()}\n")
    g = group(encap_decap, "decapsulation")
    out.write(f"decap.tgId {g['tgId']}\n")
    out.write(f"decap.dk {g['dk'].lower()}\n")
    valid = next(t for t in g["tests"] if t["reason"] == "no modification")
    modified = next(t for t in g["tests"] if t["reason"] == "modify ciphertext")
    for name, t in (("valid", valid), ("modified", modified)):
        out.write(f"decap.{name}.tcId {t['tcId']}\n")
        out.write(f"decap.{name}.c {t['c'].lower()}\n")
        out.write(f"decap.{name}.k {t['k'].lower()}\n")


if __name__ == "__main__":
    main()
