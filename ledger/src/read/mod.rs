//! Reads as of now, without the lock: transaction history pages and totals
//! (`history.rs`), lots and their filters, voids and the overdraft limit (`lots.rs`).

pub(crate) mod history;
pub(crate) mod lots;
