//! Every fixed size, label and limit of the protocol in one place.

/// Length of every X25519 / Ed25519 public key and every symmetric key.
pub const KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of the crypto v1 Double Ratchet header: `DHs_pub(32) || pn u32be || n u32be`.
pub const HEADER_LEN: usize = KEY_LEN + 4 + 4;
/// Length of the random salt a crypto v2 header carries (docs/PROTOCOL.md 2.4).
pub const SALT_LEN: usize = 16;
/// Length of the crypto v2 Double Ratchet header: the v1 fields, then the salt.
pub const HEADER_LEN_V2: usize = HEADER_LEN + SALT_LEN;
/// Length of the Poly1305 tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;
/// Length of the XChaCha20 nonce.
pub const NONCE_LEN: usize = 24;

/// HKDF info for the X3DH shared secret.
pub const X3DH_INFO: &[u8] = b"e2ee-chat/x3dh/v1";
/// Domain separation prefix of the signed-prekey signature.
pub const SPK_SIG_CONTEXT: &[u8] = b"e2ee-chat/x3dh/v1/spk";
/// HKDF info of the root KDF.
pub const DR_ROOT_INFO: &[u8] = b"e2ee-chat/dr/v1/root";
/// HKDF info of the per-message AEAD key and nonce derivation (crypto v1).
pub const DR_AEAD_INFO: &[u8] = b"e2ee-chat/dr/v1/aead";
/// HKDF info of the per-message AEAD key and nonce derivation (crypto v2, salted).
pub const DR_AEAD_INFO_V2: &[u8] = b"e2ee-chat/dr/v2/aead";
/// Domain separation prefix of a session reset request's signature.
pub const RESET_SIG_CONTEXT: &[u8] = b"e2ee-chat/reset/v1";

/// The most message keys one message may make the receiver skip.
pub const MAX_SKIP: u32 = 1000;
/// The most skipped message keys a session keeps; the oldest is evicted first.
pub const MAX_STORED_SKIPPED_KEYS: usize = 2000;

/// Type byte of a crypto v1 PreKey message.
pub const MSG_TYPE_PREKEY: u8 = 0x01;
/// Type byte of a crypto v1 Normal message.
pub const MSG_TYPE_NORMAL: u8 = 0x02;
/// Type byte of a crypto v2 PreKey message (salted header).
pub const MSG_TYPE_PREKEY_V2: u8 = 0x03;
/// Type byte of a crypto v2 Normal message (salted header).
pub const MSG_TYPE_NORMAL_V2: u8 = 0x04;
/// Type byte of a session reset request (docs/PROTOCOL.md 2.8).
pub const MSG_TYPE_RESET: u8 = 0x05;
/// PreKey message flag: a one-time prekey was used.
pub const PREKEY_FLAG_OPK: u8 = 0x01;

/// The most one-time prekeys a single bundle may carry.
pub const MAX_BUNDLE_OPKS: usize = 1000;
/// The largest encrypted message (PreKey or Normal) accepted for decryption.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
