//! Test helpers shared by unit tests: a deterministic RNG that replays given bytes.

use rand_core::{CryptoRng, RngCore};

/// Hands out the queued byte strings in order, then a fixed filler. For tests only.
pub(crate) struct QueueRng {
    queue: std::collections::VecDeque<u8>,
}

impl QueueRng {
    pub(crate) fn new(chunks: &[&[u8]]) -> Self {
        Self {
            queue: chunks.iter().flat_map(|c| c.iter().copied()).collect(),
        }
    }
}

impl RngCore for QueueRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            *byte = self.queue.pop_front().unwrap_or(0x5a);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for QueueRng {}
