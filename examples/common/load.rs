//! A small closed-loop HTTP/1.1 load generator, in the spirit of wrk: a fixed number of
//! keep-alive connections, each sending its next request as soon as the previous answer
//! has arrived and been checked. Lighter than a general HTTP client, so more of the two
//! cores is left to the server under test.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Answers that passed the check.
    pub ok: u64,
    /// Answers that failed it (or connections that broke).
    pub errors: u64,
    /// The first failing answer, for the report.
    pub first_error: Option<String>,
    /// Latency of every passing answer, sorted.
    pub latencies: Vec<Duration>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Report {
    /// Passing answers per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p` quantile of latency.
    pub fn latency(&self, p: f64) -> Duration {
        super::percentile(&self.latencies, p)
    }
}

/// A POST of `body` (JSON) to `path` with `token`, as raw bytes.
pub fn post(host: &str, path: &str, token: Option<&str>, body: &str) -> Vec<u8> {
    let auth = token.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Runs `connections` keep-alive connections against `addr` for `duration`. Request
/// number `n` (counted over all connections) is `request(n)`; each answer's body must
/// satisfy `check`. Counts only what finished inside the window.
pub async fn run(
    addr: &str,
    connections: usize,
    duration: Duration,
    request: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>,
    check: Arc<dyn Fn(&str) -> bool + Send + Sync>,
) -> Report {
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (addr, stop, counter, request, check) =
            (addr.to_owned(), stop.clone(), counter.clone(), request.clone(), check.clone());
        tasks.push(tokio::spawn(async move {
            let mut report = Report::default();
            let mut stream: Option<TcpStream> = None;
            let mut buffer = Vec::with_capacity(16 * 1024);
            while !stop.load(Ordering::Relaxed) {
                let conn = match &mut stream {
                    Some(conn) => conn,
                    None => match TcpStream::connect(&addr).await {
                        Ok(conn) => {
                            let _ = conn.set_nodelay(true);
                            stream.insert(conn)
                        }
                        Err(error) => {
                            report.errors += 1;
                            report.first_error.get_or_insert(format!("connect: {error}"));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let bytes = request(counter.fetch_add(1, Ordering::Relaxed));
                let sent = Instant::now();
                let answer = exchange(conn, &bytes, &mut buffer).await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if !report.record(answer, sent.elapsed(), check.as_ref()) {
                    // The connection broke: open another.
                    stream = None;
                }
            }
            report
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut total = Report { elapsed, ..Report::default() };
    for task in tasks {
        if let Ok(report) = task.await {
            total.ok += report.ok;
            total.errors += report.errors;
            total.first_error = total.first_error.or(report.first_error);
            total.latencies.extend(report.latencies);
        }
    }
    total.latencies.sort_unstable();
    total
}

/// A fixed amount of work, timed: one request on each of `connections` (kept open
/// across calls) at once, `request(i)` on the `i`-th, until every answer is in and
/// checked. `elapsed` is the time from the first send to the last answer.
pub async fn burst(
    connections: &mut [TcpStream],
    request: impl Fn(usize) -> Vec<u8>,
    check: Arc<dyn Fn(&str) -> bool + Send + Sync>,
) -> Report {
    let requests: Vec<Vec<u8>> = (0..connections.len()).map(request).collect();
    let started = Instant::now();
    let answers = futures::future::join_all(connections.iter_mut().zip(&requests).map(|(conn, bytes)| async move {
        let mut buffer = Vec::with_capacity(16 * 1024);
        let sent = Instant::now();
        let answer = exchange(conn, bytes, &mut buffer).await;
        (answer, sent.elapsed())
    }))
    .await;
    let mut report = Report { elapsed: started.elapsed(), ..Report::default() };
    for (answer, latency) in answers {
        report.record(answer, latency, check.as_ref());
    }
    report
}

impl Report {
    /// Counts one answer (passing `check` with status 200, or not); false when the
    /// connection broke.
    fn record(
        &mut self,
        answer: std::io::Result<(u16, String)>,
        latency: Duration,
        check: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> bool {
        match answer {
            Ok((200, body)) if check(&body) => {
                self.ok += 1;
                self.latencies.push(latency);
            }
            Ok((status, body)) => {
                self.errors += 1;
                self.first_error.get_or_insert(format!("{status} {}", &body[..body.len().min(300)]));
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert(format!("connection: {error}"));
                return false;
            }
        }
        true
    }

    /// This report and `other` as one (times add up).
    pub fn merge(mut self, other: Report) -> Report {
        self.ok += other.ok;
        self.errors += other.errors;
        self.first_error = self.first_error.or(other.first_error);
        self.latencies.extend(other.latencies);
        self.latencies.sort_unstable();
        self.elapsed += other.elapsed;
        self
    }
}

/// Sends one request and reads its answer: (status, body).
async fn exchange(conn: &mut TcpStream, request: &[u8], buffer: &mut Vec<u8>) -> std::io::Result<(u16, String)> {
    conn.write_all(request).await?;
    buffer.clear();
    let mut chunk = [0u8; 8 * 1024];
    let head_end = loop {
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            break end + 4;
        }
        let read = conn.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"));
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok()).flatten()
        })
        .ok_or_else(|| std::io::Error::other("no content-length"))?;
    while buffer.len() < head_end + length {
        let read = conn.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"));
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    Ok((status, String::from_utf8_lossy(&buffer[head_end..head_end + length]).into_owned()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}
