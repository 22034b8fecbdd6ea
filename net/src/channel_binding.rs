//! The TLS channel binding the login signs: RFC 9266 `tls-exporter`, 32 bytes exported
//! from the TLS 1.3 connection's secrets under the label `EXPORTER-Channel-Binding`
//! with no context (RFC 5705 / RFC 8446 7.5). Both ends of one connection get the same
//! value; any other connection (a relay relaying the login to another relay, a replay)
//! gets another, so a signature over it is good on this connection only.

use rustls::ConnectionCommon;

use crate::error::NetError;

/// The RFC 9266 exporter label.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";
/// Length of the channel binding.
pub const CHANNEL_BINDING_LEN: usize = 32;

/// The `tls-exporter` channel binding of an established connection (client or server).
pub fn channel_binding<Data>(
    connection: &ConnectionCommon<Data>,
) -> Result<[u8; CHANNEL_BINDING_LEN], NetError> {
    Ok(connection.export_keying_material([0u8; CHANNEL_BINDING_LEN], EXPORTER_LABEL, None)?)
}
