//! The tamper-evident audit log's formats (no I/O).
//!
//! * [`merkle`]: RFC 9162 §2.1 hashing, proofs and their verification.
//! * [`entry`]: the entry record and its canonical bytes (the Merkle leaf).
//! * [`note`]: C2SP tlog-checkpoint signed notes (ECDSA P-256).

pub mod entry;
pub mod merkle;
pub mod note;
