//! SQLite has no `NOTIFY`: a revocation committed by another process on the same file
//! (`credits api-key revoke` while the server runs) is found by polling the few keys and
//! client sessions revoked lately, and hinted to this process's connections like any other.

use std::collections::HashSet;
use std::time::Duration;

use crate::Ledger;

/// How often the database is asked; a revocation from another process closes its
/// sockets within about this long.
const POLL: Duration = Duration::from_millis(250);
/// How far back each poll looks: long enough to cover a slow commit after `revoked_at`
/// was taken; keys already hinted are not hinted again.
const LOOKBACK: chrono::Duration = chrono::Duration::seconds(30);

/// Hints revocations made by any process on this SQLite file, until the process ends.
pub async fn poll_sqlite_revocations(ledger: Ledger) {
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hinted: HashSet<String> = HashSet::new();
    loop {
        ticker.tick().await;
        let since = ledger.now() - LOOKBACK;
        let revoked = match ledger.api_keys_revoked_since(since).await {
            Ok(mut keys) => ledger.client_sessions_revoked_since(since).await.map(|sessions| {
                keys.extend(sessions);
                keys
            }),
            Err(error) => Err(error),
        };
        match revoked {
            Ok(revoked) => {
                for key_id in revoked.iter().filter(|key_id| !hinted.contains(*key_id)) {
                    ledger.events().key_revoked(key_id);
                }
                hinted = revoked.into_iter().collect();
            }
            Err(error) => tracing::debug!(%error, "live events: revocation poll failed"),
        }
    }
}
