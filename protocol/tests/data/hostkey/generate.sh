#!/usr/bin/env bash
# Regenerates the fixtures of protocol/src/hostkey/tests.rs with the local OpenSSH (made with OpenSSH 9.2p1).
# Every key here is a throwaway test key; nothing here is used outside the tests.
# Rerunning replaces all keys and signatures: the tests read everything they compare
# against (fingerprints, public keys) from these files, so they keep passing.
# Needs cargo too: the last step has our own code sign with the new ECDSA keys.
set -euo pipefail
cd "$(dirname "$0")"

rm -f -- *.pub *.sig *.fp ed25519 ecdsa256 ecdsa384 ecdsa521 ecdsa521-short rsa2048 rsa3072 rsa1024 rsa5120 dsa \
    ed25519_encrypted user-ca-* authorized_keys message.txt

printf 'sshr hostkey test message\nsecond line\n' >message.txt
NS=sshr-hostkey-test

gen() { # name, ssh-keygen key options...
    local name=$1
    shift
    ssh-keygen -q "$@" -N '' -C "$name@sshr-test" -f "$name"
}
gen ed25519 -t ed25519
gen ecdsa256 -t ecdsa -b 256
gen ecdsa384 -t ecdsa -b 384
gen ecdsa521 -t ecdsa -b 521
gen rsa2048 -t rsa -b 2048
gen rsa3072 -t rsa -b 3072
gen rsa1024 -t rsa -b 1024
gen rsa5120 -t rsa -b 5120
# A P-521 key whose private scalar OpenSSH writes in 65 bytes (its top byte is zero): about
# one key in two. ssh-key 0.6.7 cannot read those by itself (hostkey/openssh.rs).
for _ in $(seq 40); do
    rm -f ecdsa521-short ecdsa521-short.pub
    gen ecdsa521-short -t ecdsa -b 521
    /usr/bin/python3 - ecdsa521-short <<'PY' && break
import base64, struct, sys
lines = open(sys.argv[1]).read().split()
blob = base64.b64decode("".join(lines[4:-4]))
def strings(b, i, n):
    out = []
    for _ in range(n):
        (size,) = struct.unpack(">I", b[i:i + 4])
        out.append(b[i + 4:i + 4 + size])
        i += 4 + size
    return out, i
(_, _, _), i = strings(blob, 15, 3)
(_, private), _ = strings(blob, i + 4, 2)
(_, _, _, scalar), _ = strings(private, 8, 4)
sys.exit(0 if len(scalar) < 66 else 1)
PY
done
gen dsa -t dsa
ssh-keygen -q -t ed25519 -N 'correct horse battery staple' -C encrypted@sshr-test -f ed25519_encrypted

for k in ed25519 ecdsa256 ecdsa384 ecdsa521 rsa2048 rsa3072 rsa1024 rsa5120 dsa; do
    ssh-keygen -l -E sha256 -f "$k.pub" >"$k.fp"
done

# SSHSIG signatures (PROTOCOL.sshsig): the inner blob is a plain SSH signature.
# For RSA keys ssh-keygen -Y sign always uses rsa-sha2-512.
for k in ed25519 ecdsa256 ecdsa384 ecdsa521 rsa1024 rsa2048 rsa3072 rsa5120; do
    ssh-keygen -q -Y sign -f "$k" -n "$NS" <message.txt >"$k.sig"
done
# The message hash inside the SSHSIG preimage can be sha256 too.
ssh-keygen -q -Y sign -f ed25519 -n "$NS" -O hashalg=sha256 <message.txt >ed25519-sha256.sig

# Certificates: ssh-keygen -s lets -t pick the CA's signature algorithm, which is the
# only way to get rsa-sha2-256 (and legacy ssh-rsa) signatures out of ssh-keygen.
# The signature covers the certificate blob up to (not including) its last string.
for alg in rsa-sha2-256 rsa-sha2-512 ssh-rsa; do
    cp ed25519.pub "user-ca-$alg.pub"
    ssh-keygen -q -s rsa2048 -t "$alg" -I "sshr-test-$alg" -n sshr "user-ca-$alg.pub"
    rm "user-ca-$alg.pub"
done
for ca in ed25519 ecdsa256 ecdsa384 ecdsa521; do
    cp rsa2048.pub "user-ca-$ca.pub"
    ssh-keygen -q -s "$ca" -I "sshr-test-$ca" -n sshr "user-ca-$ca.pub"
    rm "user-ca-$ca.pub"
done

{
    echo '# sshr test authorized_keys'
    echo
    cat ed25519.pub
    printf '   \t\n'
    echo "command=\"echo 'hello world' # not a comment\",no-pty $(cut -d' ' -f1,2 ecdsa256.pub) with a comment"
    echo "restrict,from=\"10.0.0.1\" $(cut -d' ' -f1,2 rsa2048.pub)"
    echo "  # indented comment"
    printf '%s\t%s\ttab separated\n' "$(cut -d' ' -f1 ecdsa384.pub)" "$(cut -d' ' -f2 ecdsa384.pub)"
    echo 'ssh-ed25519 not-base64!! broken'
    echo "environment=\"A=\\\"quoted\\\" value\" $(cut -d' ' -f1,2 rsa3072.pub) escaped quote"
    echo 'ssh-ed25519'
    cat dsa.pub
    echo "$(cut -d' ' -f1 ed25519.pub) $(cut -d' ' -f2 ecdsa256.pub) type mismatch"
} >authorized_keys

# Our own ECDSA signatures (deterministic, RFC 6979), for the tests to compare with:
# OpenSSH's are randomized, so these are written by our code and checked here by OpenSSH.
# (The test crate must compile first, so the old files are replaced, not removed.)
: >ecdsa256-ours.sig
: >ecdsa384-ours.sig
: >ecdsa521-ours.sig
cargo test -q -p sshr-protocol --lib write_our_ecdsa_signature_fixtures -- --ignored
for k in ecdsa256 ecdsa384 ecdsa521; do
    ssh-keygen -q -Y check-novalidate -n "$NS" -s "$k-ours.sig" <message.txt
done
