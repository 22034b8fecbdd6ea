//! What a load message carries so the receiving side can measure it: the pair, the
//! sequence number and the *intended* send time (nanoseconds after the run's epoch),
//! padded with zeros to the payload size. Latency is taken from the intended time, not
//! from when the sender got round to writing, which corrects for coordinated omission.
//! Relay message ids carry the pair and sequence number too, so duplicates are
//! recognised before anything is decrypted.

/// Bytes of the probe header; smaller payloads are not allowed.
pub const PROBE_LEN: usize = 20;

/// A decoded probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Which sender/recipient pair.
    pub pair: u32,
    /// Sequence number within the pair.
    pub seq: u64,
    /// Intended send time, ns after the epoch.
    pub intended_ns: u64,
}

impl Probe {
    /// The payload: header then zero padding up to `size` (at least [`PROBE_LEN`]).
    pub fn encode(&self, size: usize) -> Vec<u8> {
        let mut out = vec![0u8; size.max(PROBE_LEN)];
        out[..4].copy_from_slice(&self.pair.to_be_bytes());
        out[4..12].copy_from_slice(&self.seq.to_be_bytes());
        out[12..20].copy_from_slice(&self.intended_ns.to_be_bytes());
        out
    }

    /// Reads the header of a payload.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let pair = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
        let seq = u64::from_be_bytes(bytes.get(4..12)?.try_into().ok()?);
        let intended_ns = u64::from_be_bytes(bytes.get(12..20)?.try_into().ok()?);
        Some(Self {
            pair,
            seq,
            intended_ns,
        })
    }
}

/// The relay message id of a pair's message: `pair u32be || seq u64be || 0u32`.
pub fn msg_id(pair: u32, seq: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&pair.to_be_bytes());
    id[4..12].copy_from_slice(&seq.to_be_bytes());
    id
}

/// The sequence number in a message id.
pub fn seq_of(id: &[u8; 16]) -> u64 {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&id[4..12]);
    u64::from_be_bytes(seq)
}

/// The pair in a message id.
pub fn pair_of(id: &[u8; 16]) -> u32 {
    let mut pair = [0u8; 4];
    pair.copy_from_slice(&id[..4]);
    u32::from_be_bytes(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_and_msg_id_round_trip() {
        let probe = Probe {
            pair: 7,
            seq: 1 << 40,
            intended_ns: 123_456_789,
        };
        let bytes = probe.encode(256);
        assert_eq!(bytes.len(), 256);
        assert_eq!(Probe::decode(&bytes), Some(probe));
        let id = msg_id(7, 1 << 40);
        assert_eq!((pair_of(&id), seq_of(&id)), (7, 1 << 40));
        assert_eq!(Probe::decode(&bytes[..10]), None);
    }
}
