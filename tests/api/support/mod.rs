//! What every test module shares: the harness that starts the real server over a fresh
//! database (`helpers`), the throw-away PostgreSQL cluster (`pg_cluster`), a wire-level
//! fake Stripe (`fake_stripe`), a WebSocket client (`ws_client`) and a webhook receiver
//! (`receiver`).

pub mod fake_stripe;
pub mod helpers;
pub mod pg_cluster;
pub mod receiver;
pub mod ws_client;
