//! [`RelayPin`]: what a client pins of a relay, the SHA-256 of its certificate's
//! SubjectPublicKeyInfo (the key, not the certificate: a relay may renew its certificate
//! over the same key and keep its pin), written `sha256:` and 64 lowercase hex digits.

use std::fmt;
use std::str::FromStr;

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::error::NetError;

/// The text before the digest in the written form.
const SCHEME: &str = "sha256:";

/// SHA-256 of a relay certificate's DER SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayPin([u8; 32]);

impl RelayPin {
    /// The pin of the key in `certificate` (X.509 DER).
    pub fn of_certificate(certificate: &CertificateDer<'_>) -> Result<Self, NetError> {
        let spki = spki_of(certificate)?;
        Ok(Self(Sha256::digest(&spki).into()))
    }

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The DER SubjectPublicKeyInfo of an X.509 certificate (with its SEQUENCE header),
/// parsed by rustls' own certificate parser.
fn spki_of(certificate: &CertificateDer<'_>) -> Result<Vec<u8>, NetError> {
    let parsed = webpki::EndEntityCert::try_from(certificate)
        .map_err(|err| NetError::Certificate(format!("not an X.509 certificate: {err}")))?;
    Ok(parsed.subject_public_key_info().as_ref().to_vec())
}

impl fmt::Display for RelayPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for RelayPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayPin({self})")
    }
}

impl FromStr for RelayPin {
    type Err = NetError;

    /// Parses `sha256:` and 64 hex digits (either case).
    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = || NetError::BadPin(s.to_owned());
        let digits = s.strip_prefix(SCHEME).ok_or_else(bad)?;
        let bytes: [u8; 32] = hex::decode(digits)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_is_the_digest_of_the_key_and_survives_a_new_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let first = rcgen::CertificateParams::new(vec!["relay.test".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let second = rcgen::CertificateParams::new(vec!["other.test".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let pin = RelayPin::of_certificate(first.der()).expect("pin");
        assert_eq!(pin, RelayPin::of_certificate(second.der()).expect("pin"));
        assert_eq!(
            pin.as_bytes(),
            &<[u8; 32]>::from(Sha256::digest(key.public_key_der()))
        );
        let other = rcgen::KeyPair::generate().expect("key");
        let third = rcgen::CertificateParams::new(vec!["relay.test".into()])
            .expect("params")
            .self_signed(&other)
            .expect("cert");
        assert_ne!(pin, RelayPin::of_certificate(third.der()).expect("pin"));
    }

    #[test]
    fn the_written_form_round_trips_and_bad_forms_are_refused() {
        let pin = RelayPin([0xAB; 32]);
        let text = pin.to_string();
        assert_eq!(text, format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(text.parse::<RelayPin>().expect("parses"), pin);
        assert_eq!(
            text.to_uppercase()
                .replace("SHA256", "sha256")
                .parse::<RelayPin>()
                .ok(),
            Some(pin)
        );
        for bad in [
            "",
            "sha256:",
            "sha1:abab",
            &text[..70],
            &format!("{text}00"),
            "ab".repeat(32).as_str(),
        ] {
            assert!(bad.parse::<RelayPin>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        for bytes in [vec![], vec![0x30], vec![0x30, 0x82, 0xFF], vec![0x04, 0x01, 0x00]] {
            assert!(RelayPin::of_certificate(&CertificateDer::from(bytes)).is_err());
        }
    }
}
