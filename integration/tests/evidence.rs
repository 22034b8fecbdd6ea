//! The security evidence scenarios of `make evidence`, shortened: confidentiality on the
//! wire, the adversarial relay (tamper, drop, duplicate, replay, redeliver, reorder, delay), forward
//! secrecy, post-compromise healing, recovery after a restore from backup, MITM
//! detection, impersonation (name takeover, a
//! substituted verified contact, a name re-claimed after its lease, relabelled message
//! ids), relay availability and group membership secrecy and identities. Every verdict
//! must pass.

use e2ee_integration::evidence::{self, Options};

#[test]
fn every_security_property_holds() {
    let report = evidence::run(&Options::quick()).expect("the evidence runner starts");
    let failed: Vec<String> = report
        .failures()
        .iter()
        .map(|s| format!("{}: {}", s.id, s.summary))
        .collect();
    assert!(failed.is_empty(), "failed: {failed:?}\n\n{}", report.markdown());
    assert_eq!(
        report.sections.len(),
        19,
        "one section per property and adversary mode"
    );
}
