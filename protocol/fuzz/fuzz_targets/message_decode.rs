//! Fuzzes the decoders of the end-to-end layer: the crypto v1 message encodings
//! (`Message`), the prekey bundle (`PreKeyBundle`), the application payload
//! (`Payload`) and the signed name claim (`NameClaim`).
//!
//! Every input goes to every decoder. None may panic, and whatever decodes must
//! re-encode to the same bytes. The payload is the one exception by design: a receiver
//! accepts any padding bucket while an encoder always picks the smallest, so a decoded
//! payload must re-encode to a prefix of the input with only zero padding after it, and
//! to the input itself when the input used the smallest bucket.

#![no_main]

use e2ee_protocol::message::Message;
use e2ee_protocol::name_claim::NameClaim;
use e2ee_protocol::payload::{bucket_for, Payload, PAYLOAD_HEADER_LEN};
use e2ee_protocol::prekey::PreKeyBundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    decode_message(data);
    decode_bundle(data);
    decode_payload(data);
    decode_name_claim(data);
});

fn decode_message(data: &[u8]) {
    if let Ok(message) = Message::decode(data) {
        assert_eq!(message.encode(), data, "message decoding is not canonical");
        assert_eq!(message.encoded_len(), data.len());
    }
}

fn decode_bundle(data: &[u8]) {
    if let Ok(bundle) = PreKeyBundle::decode(data) {
        assert_eq!(bundle.encode(), data, "bundle decoding is not canonical");
        // Verification of an arbitrary signature must fail cleanly, never panic.
        let _ = bundle.verify();
    }
}

fn decode_name_claim(data: &[u8]) {
    if let Ok(claim) = NameClaim::decode(data) {
        assert_eq!(claim.encode(), data, "name claim decoding is not canonical");
        // A decoded name is always a valid name, so only the signature can fail here.
        match claim.verify() {
            Ok(()) | Err(e2ee_protocol::CryptoError::BadSignature) => {}
            Err(err) => panic!("a decoded claim failed verification for another reason: {err}"),
        }
    }
}

fn decode_payload(data: &[u8]) {
    let Ok(payload) = Payload::decode(data) else {
        return;
    };
    let again = match payload.encode() {
        Ok(again) => again,
        Err(err) => panic!("a decoded payload failed to encode: {err}"),
    };
    assert_eq!(
        Some(again.len()),
        bucket_for(PAYLOAD_HEADER_LEN + payload.body.len()),
        "encoder did not pick the smallest bucket"
    );
    assert!(again.len() <= data.len(), "re-encoding is longer than the input");
    assert_eq!(
        &data[..again.len()],
        &again[..],
        "payload decoding is not canonical"
    );
    assert!(
        data[again.len()..].iter().all(|&b| b == 0),
        "decoder accepted non-zero padding"
    );
    assert_eq!(
        Payload::decode(&again).as_ref(),
        Ok(&payload),
        "re-encoding does not decode"
    );
}
