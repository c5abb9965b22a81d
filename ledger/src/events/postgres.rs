//! The PostgreSQL `LISTEN` task: one connection per process receives every replica's
//! hints (sent by `NOTIFY` inside committing transactions, so only on commit and in
//! commit order) and feeds them to the in-process hub.
//!
//! Notifications sent while the connection is down are lost, so after each (re)connect
//! every follower re-reads from the database and every WebSocket re-checks its key.

use std::time::{Duration, Instant};

use sea_orm::DatabaseConnection;
use sea_orm::sqlx::postgres::PgListener;

use super::backoff;
use super::hub::EventHub;
use super::wire::{BALANCE_CHANNEL, Hint, KEY_CHANNEL, decode_key_id};

/// A connection that stayed up this long was healthy: the next reconnect starts over at
/// the shortest wait.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// Feeds `hub` from PostgreSQL notifications until the process ends, reconnecting with
/// exponential backoff whenever the listening connection is lost.
pub async fn listen_postgres(db: DatabaseConnection, hub: EventHub) {
    let pool = db.get_postgres_connection_pool().clone();
    let mut failures: u32 = 0;
    loop {
        if failures > 0 {
            tokio::time::sleep(backoff(failures)).await;
        }
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "live events: cannot connect to LISTEN; retrying");
                failures = failures.saturating_add(1);
                continue;
            }
        };
        if let Err(error) = listener.listen_all([BALANCE_CHANNEL, KEY_CHANNEL]).await {
            tracing::warn!(%error, "live events: LISTEN failed; retrying");
            failures = failures.saturating_add(1);
            continue;
        }
        let connected = Instant::now();
        hub.set_listening(true);
        // Anything committed while we were not listening is found by re-reading.
        hub.resync_all();
        hub.recheck_all_keys();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => dispatch(&hub, notification.channel(), notification.payload()),
                Ok(None) => {
                    tracing::warn!("live events: LISTEN connection lost; reconnecting");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "live events: LISTEN failed; reconnecting");
                    break;
                }
            }
        }
        hub.set_listening(false);
        failures = if connected.elapsed() >= HEALTHY_AFTER { 1 } else { failures.saturating_add(1) };
    }
}

/// Hands one notification to the hub. Whatever it says, it is only a hint: the worst a
/// forged one can do is cause a database read.
fn dispatch(hub: &EventHub, channel: &str, payload: &str) {
    match channel {
        BALANCE_CHANNEL => match Hint::decode(payload) {
            Some(hint) => hub.publish(hint),
            None => tracing::warn!(payload_len = payload.len(), "live events: ignoring a malformed balance hint"),
        },
        KEY_CHANNEL => match decode_key_id(payload) {
            Some(key_id) => hub.key_revoked(key_id),
            None => tracing::warn!(payload_len = payload.len(), "live events: ignoring a malformed revocation hint"),
        },
        _ => {}
    }
}
