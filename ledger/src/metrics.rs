//! What the ledger measures of itself, through the `metrics` facade: how many requests
//! each commit carries and how long it takes. The server installs the recorder (and
//! names these families in its `/metrics`); without one, recording is a no-op.

/// Requests committed together in one transaction (histogram).
pub const BATCH_SIZE: &str = "credits_ledger_batch_size";
/// Time of one batch, from its transaction's start to its commit (histogram, seconds).
pub const COMMIT_DURATION: &str = "credits_ledger_commit_duration_seconds";
/// Auto top-ups by the status they reached: `pending` (started), `succeeded`, `failed`,
/// `requires_action` (counter).
pub const TOP_UPS: &str = "credits_topups_total";

/// Records one batch of `size` requests that took `elapsed`.
pub(crate) fn batch(size: usize, elapsed: std::time::Duration) {
    metrics::histogram!(BATCH_SIZE).record(size as f64);
    metrics::histogram!(COMMIT_DURATION).record(elapsed.as_secs_f64());
}

/// Records what a committed transaction started and raised: `started` top-ups, and the
/// ends of top-ups among its outgoing events. Called after the commit only.
pub(crate) fn committed(started: u64, events: impl Iterator<Item = crate::EventType>) {
    if started > 0 {
        metrics::counter!(TOP_UPS, "status" => "pending").increment(started);
    }
    for kind in events {
        let status = match kind {
            crate::EventType::TopupSucceeded => "succeeded",
            crate::EventType::TopupFailed => "failed",
            crate::EventType::TopupRequiresAction => "requires_action",
            _ => continue,
        };
        metrics::counter!(TOP_UPS, "status" => status).increment(1);
    }
}
