//! Local storage: the message spool used while receiving (memory, spilling to a file) and, with the
//! pipeline, the idempotency state store.

pub mod pg_queue;
pub mod postgres;
pub mod queue;
pub mod spool;
pub mod state;
