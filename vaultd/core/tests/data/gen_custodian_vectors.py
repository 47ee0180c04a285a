#!/usr/bin/env python3
"""Independent reference for the custodian formats (Shamir over GF(2^8),
ECIES with P-256/HKDF-SHA256/AES-256-GCM), written from the format
descriptions in vaultd/core/src/custodian/{shamir,ecies}.rs, not from the
Rust code. Regenerate: python3 gen_custodian_vectors.py > custodian_vectors.json
Needs the `cryptography` package."""
import json, os, hashlib
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes, serialization

def gmul(a, b):
    p = 0
    while b:
        if b & 1: p ^= a
        a <<= 1
        if a & 0x100: a ^= 0x11b
        b >>= 1
    return p

def gpow(a, e):
    r = 1
    for _ in range(e): r = gmul(r, a)
    return r

def ginv(a): return gpow(a, 254)

def split(secret, k, n, stream):
    """coefficients 1..k-1 of byte i's polynomial come from the stream, in order"""
    it = iter(stream)
    shares = {x: [] for x in range(1, n + 1)}
    for s in secret:
        coeffs = [s] + [next(it) for _ in range(k - 1)]
        for x in shares:
            y = 0
            for j, c in enumerate(coeffs): y ^= gmul(c, gpow(x, j))
            shares[x].append(y)
    return shares

def combine(pts):
    out = []
    xs = [x for x, _ in pts]
    for i in range(len(pts[0][1])):
        acc = 0
        for j, (xj, yj) in enumerate(pts):
            num, den = 1, 1
            for m, xm in enumerate(xs):
                if m != j: num = gmul(num, xm); den = gmul(den, xm ^ xj)
            acc ^= gmul(yj[i], gmul(num, ginv(den)))
        out.append(acc)
    return bytes(out)

def sec1(pub): return pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)

def ecies(recipient_d, eph_d, nonce, aad, pt):
    r = ec.derive_private_key(recipient_d, ec.SECP256R1())
    e = ec.derive_private_key(eph_d, ec.SECP256R1())
    R, E = sec1(r.public_key()), sec1(e.public_key())
    z = e.exchange(ec.ECDH(), r.public_key())
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=E + R, info=b"vaultd custodian ecies v1").derive(z)
    ct = AESGCM(key).encrypt(nonce, pt, b"\x01" + aad)
    return R, b"\x01" + E + nonce + ct

rnd = lambda n: os.urandom(n)
vec = {"shamir": [], "ecies": []}
for (k, n, secret) in [(2, 3, rnd(32)), (3, 5, rnd(32)), (1, 2, rnd(7)), (5, 5, rnd(16))]:
    stream = rnd(len(secret) * max(k - 1, 0))
    shares = split(secret, k, n, stream)
    assert combine([(x, shares[x]) for x in list(shares)[:k]]) == secret
    vec["shamir"].append({"k": k, "n": n, "secret": secret.hex(), "coefficient_stream": stream.hex(),
                          "shares": [bytes([x] + y).hex() for x, y in shares.items()]})
order = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551
for plen in (33, 1, 64):
    rd = int.from_bytes(rnd(32), "big") % (order - 1) + 1
    ed = int.from_bytes(rnd(32), "big") % (order - 1) + 1
    nonce, aad, pt = rnd(12), b"vaultd/share/v1|db/root|3|alice", rnd(plen)
    R, env = ecies(rd, ed, nonce, aad, pt)
    vec["ecies"].append({"recipient_d": "%064x" % rd, "recipient_pub": R.hex(), "ephemeral_d": "%064x" % ed,
                         "nonce": nonce.hex(), "aad": aad.hex(), "plaintext": pt.hex(), "envelope": env.hex()})
print(json.dumps(vec, indent=1))
