//! Reads as of now, without the lock: transaction history pages and totals
//! (`history.rs`), lots and their filters, voids and the overdraft limit (`lots.rs`),
//! usage reports (`usage.rs`), the audit log (`audit.rs`), and checking every invariant of the books (`verify.rs`).

pub(crate) mod audit;
pub(crate) mod history;
pub(crate) mod lots;
pub(crate) mod usage;
pub(crate) mod verify;
