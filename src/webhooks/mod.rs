//! Outgoing webhooks: the dispatcher that delivers the events the ledger's outbox wrote.
//!
//! Every replica runs one. The ledger writes each event's deliveries with it (one per
//! matching endpoint, in the change's transaction); the dispatcher claims due deliveries
//! under a lease ([`Ledger::claim_deliveries`]: PostgreSQL `FOR UPDATE SKIP LOCKED`,
//! SQLite's single writer), so no two dispatchers send the same attempt at once. It is
//! woken by this process's commits and sweeps every second for the rest (other replicas'
//! commits, retries coming due, events of an older version still to fan out). At most
//! [`PER_ENDPOINT`] attempts are in flight per endpoint and
//! [`IN_FLIGHT`] in all, each with a 15-second timeout, so a slow or dead endpoint holds
//! only its own slots; the ledger never waits for any of it. Deliveries are claimed
//! ahead, `CLAIM` at a time: up to three times as many as may be in flight wait for
//! slots, each started the moment an attempt is answered, so a claim (a write) serves a
//! burst, not a slot; and a claim woken by a commit waits `GATHER` for the next commits'
//! deliveries, so a storm of commits is claimed a burst at a time, not one each.
//! Finished attempts are recorded by one task, a burst per transaction (it waits
//! `LINGER` for the rest of a burst), so a busy dispatcher writes little.
//!
//! - `sign.rs`: Standard Webhooks v1 signatures.
//! - `address.rs`: where webhooks may go (no request forgery), at saving and connecting.

pub mod address;
pub mod sign;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::WebhookConfig;
use crate::ledger::Ledger;
use crate::ledger::webhooks::{AttemptOutcome, ClaimedDelivery};
use crate::lock;

/// Attempts in flight per endpoint.
pub const PER_ENDPOINT: usize = 16;
/// Attempts in flight in all.
pub const IN_FLIGHT: usize = 64;
/// How long an attempt may take.
pub const TIMEOUT: StdDuration = StdDuration::from_secs(15);
/// How long the recorder waits for more finished attempts to record with the first.
const LINGER: StdDuration = StdDuration::from_millis(2);
/// The most deliveries one claim takes.
const CLAIM: usize = 128;
/// The most deliveries claimed, in flight and waiting for a slot.
const CLAIMED: usize = 4 * IN_FLIGHT;
/// How long a claim woken by a commit waits for the deliveries of the next ones.
const GATHER: StdDuration = StdDuration::from_millis(10);
/// A claim's lease: longer than an attempt can take.
const LEASE_SECS: i64 = 60;
/// How long a claimed delivery may wait for a slot of its endpoint before it is given back.
const WAIT: StdDuration = StdDuration::from_secs(1);
/// An endpoint whose deliveries all failed for this long is disabled.
const FAILING_DAYS: i64 = 5;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER_SECS: u64 = 86_400;

/// An attempt made and what it came to, waiting to be recorded.
type Finished = (ClaimedDelivery, AttemptOutcome);

/// Delivers outgoing webhooks; see the module doc.
#[derive(Clone)]
pub struct Dispatcher {
    ledger: Ledger,
    client: reqwest::Client,
    config: WebhookConfig,
    in_flight: Arc<Semaphore>,
    per_endpoint: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    /// Claimed deliveries whose endpoint had no slot free, since when: started as slots
    /// free, given back after [`WAIT`] (so that claims need not be undone one round each).
    waiting: Arc<Mutex<Vec<(Instant, ClaimedDelivery)>>>,
    /// Endpoints whose claimed deliveries were given back unattempted, since when (see
    /// [`Dispatcher::busy_endpoints`]).
    slow: Arc<Mutex<HashMap<String, Instant>>>,
    /// Finished attempts, recorded by one task many at a time (one write transaction
    /// for a burst of deliveries, not one each).
    finished: tokio::sync::mpsc::UnboundedSender<Finished>,
    finished_queue: Arc<Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Finished>>>>,
}

impl Dispatcher {
    /// A dispatcher over `ledger` with `config`.
    pub fn new(ledger: Ledger, config: WebhookConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .dns_resolver(Arc::new(address::PublicResolver { allow_private: config.allow_private }))
            .user_agent(concat!("credits-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let (finished, finished_queue) = tokio::sync::mpsc::unbounded_channel();
        Ok(Self {
            ledger,
            client,
            config,
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
            per_endpoint: Arc::default(),
            waiting: Arc::default(),
            slow: Arc::default(),
            finished,
            finished_queue: Arc::new(Mutex::new(Some(finished_queue))),
        })
    }

    /// Runs until the runtime stops: delivers whatever is due, when woken or every second.
    pub fn start(self) -> tokio::task::JoinHandle<()> {
        let queue = lock(&self.finished_queue).take();
        if let Some(queue) = queue {
            tokio::spawn(self.clone().record(queue));
        }
        tokio::spawn(async move {
            let mut swept: Option<Instant> = None;
            loop {
                // A sweep at least every second, however often commits wake it.
                let sweep = swept.is_none_or(|at| at.elapsed() >= StdDuration::from_secs(1));
                if sweep {
                    swept = Some(Instant::now());
                }
                if let Err(error) = self.round(sweep).await {
                    tracing::warn!(%error, "webhooks: claiming deliveries failed; retrying");
                }
                tokio::select! {
                    () = self.ledger.events().deliveries().notified() => tokio::time::sleep(GATHER).await,
                    () = tokio::time::sleep(StdDuration::from_secs(1)) => {}
                }
            }
        })
    }

    /// Records finished attempts as they come, a burst at a time (their slots were freed
    /// as each was answered), then looks for more.
    async fn record(self, mut queue: tokio::sync::mpsc::UnboundedReceiver<Finished>) {
        let mut batch = Vec::new();
        while queue.recv_many(&mut batch, 256).await > 0 {
            // A moment for the rest of a burst: a record is a write transaction, which
            // on SQLite takes turns with the committer's batches.
            if batch.len() < 64 {
                tokio::time::sleep(LINGER).await;
                while batch.len() < 256
                    && let Ok(finished) = queue.try_recv()
                {
                    batch.push(finished);
                }
            }
            let succeeded =
                batch.iter().filter(|(_, outcome)| matches!(outcome, AttemptOutcome::Succeeded { .. })).count();
            crate::metrics::webhook_deliveries("succeeded", succeeded as u64);
            crate::metrics::webhook_deliveries("failed", (batch.len() - succeeded) as u64);
            let failing_for = chrono::Duration::days(FAILING_DAYS);
            match self.ledger.record_attempts(&batch, failing_for).await {
                Ok(held) if held < batch.len() => {
                    tracing::warn!(lost = batch.len() - held, "webhook attempts outlived their lease; not recorded");
                }
                Ok(_) => {}
                Err(error) => {
                    // Unrecorded attempts are made again when their lease ends (at least once).
                    tracing::error!(%error, attempts = batch.len(), "webhook attempts could not be recorded");
                }
            }
            batch.clear();
            // Room again: look for more at once.
            self.ledger.events().deliveries().notify_one();
        }
    }

    /// On a `sweep`, fans out events whose deliveries were not written with them; then
    /// starts the deliveries that waited for a slot, and claims and starts due ones while
    /// there are any and room for them. Endpoints at their limit are left out of a claim.
    async fn round(&self, sweep: bool) -> Result<(), crate::ledger::LedgerError> {
        let lease = chrono::Duration::seconds(LEASE_SECS);
        if sweep && let Err(error) = self.fan_out().await {
            // The claims below go on all the same.
            tracing::warn!(%error, "webhooks: fanning events out failed; retrying");
        }
        let mut given_back = Vec::new();
        let waited = std::mem::take(&mut *lock(&self.waiting));
        for (since, delivery) in waited {
            self.start_or_wait(delivery, since, &mut given_back);
        }
        let claimed = self.claim_and_start(lease, &mut given_back).await;
        // Given back whatever came of the claims (else they would idle until their lease ends).
        let released = self.ledger.release_deliveries(&given_back).await;
        claimed.and(released)
    }

    /// Claims due deliveries and starts them, or leaves them waiting for a slot, while a
    /// claim comes back full and none waits.
    async fn claim_and_start(
        &self,
        lease: chrono::Duration,
        given_back: &mut Vec<String>,
    ) -> Result<(), crate::ledger::LedgerError> {
        loop {
            // Claimed ahead: three times as many as may be in flight wait for slots, so
            // that a claim is made once for a burst, not for each slot that frees (each
            // claim is a write). A claim waits until there is room for a whole one, unless
            // nothing waits.
            let waiting = lock(&self.waiting).len();
            let in_flight = IN_FLIGHT - self.in_flight.available_permits();
            let room = CLAIMED.saturating_sub(in_flight + waiting).min(CLAIM);
            if room == 0 || (waiting > 0 && room < CLAIM) {
                return Ok(());
            }
            let busy = self.busy_endpoints();
            let claimed = self.ledger.claim_deliveries(room as u64, lease, &busy).await?;
            let full = claimed.len() == room;
            let now = Instant::now();
            for delivery in claimed {
                self.start_or_wait(delivery, now, given_back);
            }
            if !full || !lock(&self.waiting).is_empty() {
                return Ok(());
            }
        }
    }

    /// The endpoints with every slot taken and, waiting for them, as many claimed
    /// deliveries as there are slots, or claimed deliveries given back unattempted in the
    /// last [`TIMEOUT`] (a slow or dead endpoint, whose deliveries would only be claimed
    /// and given back again): no claim takes more of theirs.
    fn busy_endpoints(&self) -> Vec<String> {
        let mut waiting: HashMap<String, usize> = HashMap::new();
        for (_, delivery) in lock(&self.waiting).iter() {
            *waiting.entry(delivery.endpoint_id.clone()).or_default() += 1;
        }
        let mut slow = lock(&self.slow);
        slow.retain(|_, since| since.elapsed() < TIMEOUT);
        lock(&self.per_endpoint)
            .iter()
            .filter(|(endpoint_id, slots)| {
                slots.available_permits() == 0
                    && (waiting.get(*endpoint_id).copied().unwrap_or(0) >= PER_ENDPOINT
                        || slow.contains_key(*endpoint_id))
            })
            .map(|(endpoint_id, _)| endpoint_id.clone())
            .collect()
    }

    /// Starts the first claimed delivery waiting for a slot that now has one (no database
    /// work: called as each attempt is answered, which frees one slot of its endpoint and
    /// one of all, so one at most). One that has waited [`WAIT`] is left for the next
    /// round to give back: started later, it could outlive its lease.
    fn start_waited(&self) {
        let mut waiting = lock(&self.waiting);
        let startable = waiting.iter().enumerate().find_map(|(i, (since, delivery))| {
            let permits = if since.elapsed() < WAIT { self.permits(&delivery.endpoint_id) } else { None };
            permits.map(|permits| (i, permits))
        });
        if let Some((i, permits)) = startable {
            let (_, delivery) = waiting.remove(i);
            drop(waiting);
            self.spawn_attempt(delivery, permits);
        }
    }

    /// Fans out the events whose deliveries were not written with them (see
    /// [`Ledger::fan_out_events`]); the claims that follow take their deliveries.
    async fn fan_out(&self) -> Result<(), crate::ledger::LedgerError> {
        while self.ledger.fan_out_events(500).await? == 500 {}
        Ok(())
    }

    /// Starts `delivery` if there is a slot for it; else it waits (claimed `since`), or
    /// after [`WAIT`] is given back.
    fn start_or_wait(&self, delivery: ClaimedDelivery, since: Instant, given_back: &mut Vec<String>) {
        match self.permits(&delivery.endpoint_id) {
            Some(permits) => self.spawn_attempt(delivery, permits),
            None if since.elapsed() < WAIT => lock(&self.waiting).push((since, delivery)),
            None => {
                lock(&self.slow).insert(delivery.endpoint_id, Instant::now());
                given_back.push(delivery.id);
            }
        }
    }

    /// Makes an attempt of `delivery` in its own task, holding `permits` until answered.
    fn spawn_attempt(&self, delivery: ClaimedDelivery, permits: (OwnedSemaphorePermit, OwnedSemaphorePermit)) {
        let dispatcher = self.clone();
        tokio::spawn(async move { dispatcher.attempt(delivery, permits).await });
    }

    /// A slot overall and one of the endpoint's, or none if either is full.
    fn permits(&self, endpoint_id: &str) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let endpoint = {
            let mut per_endpoint = lock(&self.per_endpoint);
            if per_endpoint.len() > 10_000 {
                per_endpoint.retain(|_, semaphore| semaphore.available_permits() < PER_ENDPOINT);
            }
            per_endpoint.entry(endpoint_id.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(PER_ENDPOINT))).clone()
        };
        let endpoint = endpoint.try_acquire_owned().ok()?;
        let overall = self.in_flight.clone().try_acquire_owned().ok()?;
        Some((endpoint, overall))
    }

    /// One attempt, handed to the recorder; its slots are free once it is answered.
    async fn attempt(&self, delivery: ClaimedDelivery, permits: (OwnedSemaphorePermit, OwnedSemaphorePermit)) {
        let outcome = self.send(&delivery).await;
        drop(permits);
        self.start_waited();
        match &outcome {
            AttemptOutcome::Succeeded { status_code } => {
                tracing::debug!(delivery = %delivery.id, event = %delivery.event_id, status_code, "webhook delivered");
            }
            AttemptOutcome::NotDelivered { status_code, error, retry_at, .. } => {
                tracing::info!(
                    delivery = %delivery.id,
                    event = %delivery.event_id,
                    endpoint = %delivery.endpoint_id,
                    ?status_code,
                    %error,
                    retry = ?retry_at,
                    "webhook not delivered"
                );
            }
        }
        if self.finished.send((delivery, outcome)).is_err() {
            tracing::error!("webhooks: the recorder has stopped");
        }
    }

    /// Sends one attempt and says what it came to.
    #[tracing::instrument(
        name = "webhook.delivery",
        skip_all,
        fields(otel.kind = "client", delivery = %delivery.id, event = %delivery.event_id, attempt = delivery.attempts + 1)
    )]
    async fn send(&self, delivery: &ClaimedDelivery) -> AttemptOutcome {
        let failed =
            |status_code: Option<u16>, error: String, retry_after: Option<StdDuration>| AttemptOutcome::NotDelivered {
                status_code: status_code.map(i32::from),
                error,
                retry_at: self.retry_at(delivery.attempts, retry_after),
                disable: None,
            };
        let url = match address::check_form(&delivery.url, &self.config) {
            Ok(url) => url,
            Err(error) => return failed(None, error, None),
        };
        // An address written in the URL bypasses the resolver: checked here.
        if !self.config.allow_private
            && let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = url.host()
        {
            let ip = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
            if ip.parse().map(address::is_public) != Ok(true) {
                return failed(None, format!("{ip} is not a public address"), None);
            }
        }
        if delivery.secrets.is_empty() {
            return failed(
                None,
                "the endpoint's secret cannot be read (sealed under another CREDITS_SECRETS_KEY?)".into(),
                None,
            );
        }
        let timestamp = self.ledger.now().timestamp();
        let Some(signature) =
            sign::signature_header(&delivery.secrets, &delivery.event_id, timestamp, &delivery.payload)
        else {
            return failed(None, "the endpoint's secret is unusable".into(), None);
        };
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.payload.clone())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return failed(None, describe(&error), None),
        };
        let status = response.status();
        if status.is_success() {
            return AttemptOutcome::Succeeded { status_code: i32::from(status.as_u16()) };
        }
        if status == reqwest::StatusCode::GONE {
            return AttemptOutcome::NotDelivered {
                status_code: Some(410),
                error: "the endpoint answered 410 Gone".into(),
                retry_at: None,
                disable: Some("the endpoint answered 410 Gone".into()),
            };
        }
        let retry_after = match status {
            reqwest::StatusCode::TOO_MANY_REQUESTS | reqwest::StatusCode::SERVICE_UNAVAILABLE => response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(|seconds| StdDuration::from_secs(seconds.min(MAX_RETRY_AFTER_SECS))),
            _ => None,
        };
        let error = if status.is_redirection() {
            format!("the endpoint answered {status}; redirects are not followed")
        } else {
            format!("the endpoint answered {status}")
        };
        failed(Some(status.as_u16()), error, retry_after)
    }

    /// When the next attempt is due after `attempts` earlier ones failed and this one
    /// too: the schedule's next wait (±10 %), or the receiver's `Retry-After`; none when
    /// the schedule is spent.
    fn retry_at(&self, attempts: i32, retry_after: Option<StdDuration>) -> Option<DateTime<Utc>> {
        let wait = *self.config.retry_schedule.get(usize::try_from(attempts).ok()?)?;
        let wait = retry_after.unwrap_or_else(|| jittered(wait));
        Some(self.ledger.now() + chrono::Duration::from_std(wait).ok()?)
    }
}

/// `wait`, give or take 10 %.
fn jittered(wait: StdDuration) -> StdDuration {
    let random = uuid::Uuid::new_v4().as_u128() as u16;
    let factor = 0.9 + 0.2 * f64::from(random) / f64::from(u16::MAX);
    wait.mul_f64(factor)
}

/// A transport error, briefly: what kind, without the URL's query.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_redirect() {
        "redirected"
    } else {
        "failed"
    };
    let mut source: &dyn std::error::Error = error;
    while let Some(inner) = source.source() {
        source = inner;
    }
    format!("the request {kind}: {source}")
}
