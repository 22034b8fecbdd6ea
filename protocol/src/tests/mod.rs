//! Unit tests that need the crate's internals: the known-answer vectors (intermediate
//! keys the public API does not expose) and a deterministic RNG for them.

mod known_answers;
mod known_answers_v2;
mod queue_rng;
