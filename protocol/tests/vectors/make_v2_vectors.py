#!/usr/bin/env python3
"""Crypto v2 known answers (docs/PROTOCOL.md 2.4, 2.5, 2.8), computed without the Rust code.

Takes the message keys, headers, AD and plaintexts of the v1 vectors (made by an
independent implementation) and applies the v2 changes with Python's standard library
and the `cryptography` package: the salted AEAD derivation, the 56-byte header, the v2
type bytes, and a session reset request signed with Ed25519. XChaCha20-Poly1305 is
HChaCha20 (written out below, RFC draft-irtf-cfrg-xchacha section 2.2) followed by the
IETF ChaCha20-Poly1305 of `cryptography` with nonce 0x00000000 || nonce[16:24].

    python3 protocol/tests/vectors/make_v2_vectors.py > protocol/tests/vectors/e2ee-chat-v2.json
"""

import hashlib
import hmac
import json
import pathlib
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

HERE = pathlib.Path(__file__).parent
V1 = json.loads((HERE / "e2ee-chat-v1.json").read_text())
AEAD_INFO_V2 = b"e2ee-chat/dr/v2/aead"
RESET_CONTEXT = b"e2ee-chat/reset/v1"
SALTS = {"a0": bytes(range(0, 16)), "a1": bytes(range(16, 32)), "b0": bytes(range(32, 48))}


def h(path):
    value = V1
    for part in path.split("."):
        value = value[part]
    return bytes.fromhex(value)


def hkdf_sha256(salt, ikm, info, length):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def hchacha20(key, nonce16):
    def rotl(v, c):
        return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))

    def quarter(s, a, b, c, d):
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF
        s[d] = rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF
        s[b] = rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF
        s[d] = rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF
        s[b] = rotl(s[b] ^ s[c], 7)

    state = list(struct.unpack("<4I", b"expand 32-byte k"))
    state += list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))
    for _ in range(10):
        quarter(state, 0, 4, 8, 12)
        quarter(state, 1, 5, 9, 13)
        quarter(state, 2, 6, 10, 14)
        quarter(state, 3, 7, 11, 15)
        quarter(state, 0, 5, 10, 15)
        quarter(state, 1, 6, 11, 12)
        quarter(state, 2, 7, 8, 13)
        quarter(state, 3, 4, 9, 14)
    return struct.pack("<8I", *(state[0:4] + state[12:16]))


def xchacha20poly1305_encrypt(key, nonce24, plaintext, aad):
    subkey = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(subkey).encrypt(b"\0" * 4 + nonce24[16:], plaintext, aad)


def check_hchacha20():
    # draft-irtf-cfrg-xchacha-03, section 2.2.1.
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    want = "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"
    assert hchacha20(key, nonce).hex() == want, "HChaCha20 test vector"


def message(tag, plaintext_path):
    mk = h(f"double_ratchet.{tag}.mk")
    salt = SALTS[tag]
    okm = hkdf_sha256(salt, mk, AEAD_INFO_V2, 56)
    key, nonce = okm[:32], okm[32:]
    header = h(f"double_ratchet.{tag}.header") + salt
    aad = h("x3dh.ad") + header
    ct = xchacha20poly1305_encrypt(key, nonce, h(plaintext_path), aad)
    if tag == "b0":
        wire = bytes([0x04]) + header + ct
        kind = "wire_normal_message"
    else:
        v1 = h(f"double_ratchet.{tag}.wire_prekey_message")
        x3dh_fields = v1[1 : 2 + 96 + (32 if v1[1] & 1 else 0)]
        wire = bytes([0x03]) + x3dh_fields + header + ct
        kind = "wire_prekey_message"
    return {
        "salt": salt.hex(),
        "aead_key": key.hex(),
        "aead_nonce": nonce.hex(),
        "header": header.hex(),
        "aead_aad": aad.hex(),
        "ciphertext": ct.hex(),
        kind: wire.hex(),
    }


def reset_request():
    bob = Ed25519PrivateKey.from_private_bytes(h("inputs.ik_b_seed"))
    signed = (
        bytes([0x05, 0x01])
        + h("x3dh.ik_b_ed25519_pub")
        + h("x3dh.ik_a_ed25519_pub")
        + h("double_ratchet.ratchet_a0_pub")
        + struct.pack(">I", 1)
        + bytes([0x02])
    )
    signature = bob.sign(RESET_CONTEXT + signed)
    return {
        "note": "bob asks alice for a new session: her message a1 reused a chain position (reason 0x02)",
        "requester": "bob",
        "ratchet_key": h("double_ratchet.ratchet_a0_pub").hex(),
        "n": 1,
        "reason": 2,
        "wire": (signed + signature).hex(),
    }


def main():
    check_hchacha20()
    out = {
        "protocol": "e2ee-chat crypto v2 (docs/PROTOCOL.md revision 5)",
        "generated_by": "protocol/tests/vectors/make_v2_vectors.py from the v1 vectors "
        "(hashlib/hmac, cryptography ChaCha20Poly1305 and Ed25519, HChaCha20 in Python)",
        "aead": "okm=HKDF-SHA256(salt=header.salt(16), ikm=MK, info=e2ee-chat/dr/v2/aead, L=56); "
        "XChaCha20-Poly1305(key=okm[0:32], nonce=okm[32:56], aad=AD||header56)",
        "inputs": "the v1 vectors' message keys, headers, AD and plaintexts",
        "double_ratchet": {
            "a0": message("a0", "inputs.plaintext_a0"),
            "a1": message("a1", "inputs.plaintext_a1"),
            "b0": message("b0", "inputs.plaintext_b0"),
        },
        "reset_request": reset_request(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
