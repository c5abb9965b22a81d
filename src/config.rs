//! Configuration, read from the environment in one place (flags may override it).

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

/// A secret value that never appears in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Output format of the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Bounds that keep one client from exhausting the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest accepted request body, in bytes.
    pub body_bytes: usize,
    /// Deepest accepted query nesting.
    pub query_depth: usize,
    /// Largest accepted cost of a request or batch (see `graphql::limits`).
    pub query_complexity: usize,
    /// Whether introspection (`__schema`, `__type`) is answered (`CREDITS_INTROSPECTION`).
    pub introspection: bool,
    /// Requests per second per token (or per IP without one); `None` is no limit
    /// (`CREDITS_RATE_LIMIT`). The burst is twice the rate.
    pub rate_limit: Option<std::num::NonZeroU32>,
    /// Whether the client IP comes from `X-Forwarded-For` (`CREDITS_TRUST_PROXY`).
    pub trust_proxy: bool,
    /// Most open WebSockets per token (`CREDITS_WS_MAX_CONNECTIONS_PER_TOKEN`).
    pub ws_max_connections_per_token: usize,
    /// Longest a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Longest an idle keep-alive connection stays open.
    pub idle_timeout: Duration,
    /// Longest in-flight requests may take to finish once shutdown begins.
    pub shutdown_grace: Duration,
    /// Most operations in one batched request.
    pub batch_size: usize,
    /// Longest time one HTTP request may take, in seconds.
    pub request_timeout_secs: u64,
    /// Interval of WebSocket keep-alive pings; a client silent for three is closed.
    pub ws_keepalive: Duration,
    /// Time a WebSocket client has to send `connection_init`.
    pub ws_init_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 64 * 1024,
            query_depth: 12,
            query_complexity: 2_000,
            introspection: true,
            rate_limit: std::num::NonZeroU32::new(1_000),
            trust_proxy: false,
            ws_max_connections_per_token: 32,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(25),
            batch_size: 10,
            request_timeout_secs: 30,
            ws_keepalive: Duration::from_secs(15),
            ws_init_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything the server needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Where to listen.
    pub addr: SocketAddr,
    /// Bearer token with rights over every organization; none disables admin access over HTTP.
    pub admin_token: Option<Secret>,
    /// The file of credit packages on sale (`CREDITS_PACKAGES`); none: the built-in
    /// Starter and Basic. Read when the application is built.
    pub packages_file: Option<PathBuf>,
    /// Where Checkout returns the buyer after paying, when the request names no URL.
    pub checkout_success_url: Option<String>,
    /// Where Checkout returns the buyer after cancelling, when the request names no URL.
    pub checkout_cancel_url: Option<String>,
    /// Stripe API access; `None` when `STRIPE_SECRET_KEY` is unset.
    pub stripe: Option<StripeConfig>,
    /// The `whsec_…` secret webhooks are signed with; `None` disables the webhook (503).
    pub stripe_webhook_secret: Option<Secret>,
    /// Browser origins allowed to call `/graphql` and load `/elements.js` and `/assets/…`.
    pub cors_origins: Vec<String>,
    /// Whether GraphiQL is served at `GET /graphql` for browsers (`CREDITS_GRAPHIQL`).
    pub graphiql: bool,
    /// Log line format.
    pub log_format: LogFormat,
    /// Tracing filter directives (`RUST_LOG`).
    pub log_filter: String,
    /// Abuse limits.
    pub limits: Limits,
    /// Longest a PostgreSQL statement may run (`CREDITS_DB_STATEMENT_TIMEOUT_MS`).
    pub db_statement_timeout: Duration,
    /// Our own proxies, skipped from the right of `X-Forwarded-For` when
    /// `CREDITS_TRUST_PROXY` is on (`CREDITS_TRUSTED_PROXIES`, comma-separated CIDRs).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Outgoing webhooks.
    pub webhooks: WebhookConfig,
    /// The key webhook signing secrets are sealed with at rest (`CREDITS_SECRETS_KEY`,
    /// the base64 of 32 random bytes); none stores them as issued.
    pub secrets_key: Option<Secret>,
    /// The bearer token `GET /metrics` asks for on the main address
    /// (`CREDITS_METRICS_TOKEN`); none answers 404 there.
    pub metrics_token: Option<Secret>,
    /// A second address serving only `GET /metrics`, without a token
    /// (`CREDITS_METRICS_ADDR`, e.g. `127.0.0.1:9090`).
    pub metrics_addr: Option<SocketAddr>,
    /// Where spans go, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    pub otlp: Option<OtlpConfig>,
}

/// Exporting traces to an OpenTelemetry collector over OTLP/HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The collector's base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`); spans go to `/v1/traces`.
    pub endpoint: String,
    /// `http/protobuf` (the default) or `http/json` (`OTEL_EXPORTER_OTLP_PROTOCOL`).
    pub json: bool,
    /// `service.name` (`OTEL_SERVICE_NAME`, default `credits`).
    pub service_name: String,
}

/// How outgoing webhooks are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The wait before each retry (`CREDITS_WEBHOOK_RETRY_SCHEDULE`, comma-separated
    /// durations such as `5s,5m,2h`); its length is the number of retries.
    pub retry_schedule: Vec<Duration>,
    /// Whether `http://` endpoints are accepted (`CREDITS_WEBHOOK_ALLOW_HTTP`).
    pub allow_http: bool,
    /// Whether endpoints may resolve to loopback, private, link-local and other
    /// non-public addresses (`CREDITS_WEBHOOK_ALLOW_PRIVATE`).
    pub allow_private: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            retry_schedule: vec![
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                minutes(120),
                minutes(300),
                minutes(600),
                minutes(600),
            ],
            allow_http: false,
            allow_private: false,
        }
    }
}

/// A duration such as `500ms`, `5s`, `5m`, `2h` or `1d`.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(number.checked_mul(millis)?))
}

/// How to reach Stripe's API.
#[derive(Clone, Debug)]
pub struct StripeConfig {
    /// `sk_…` secret key.
    pub secret_key: Secret,
    /// API origin without `/v1`; `None` for Stripe's public API.
    pub api_base: Option<String>,
    /// How long one Stripe call may take before it counts as failed.
    pub timeout: Duration,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable has a value that cannot be used.
    #[error("{name}: {message}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The default database: a file next to the working directory, created on first run.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://credits.db?mode=rwc";
/// The default listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// The shortest admin token accepted, so a guessable one cannot be configured by accident.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
        let addr = get("CREDITS_ADDR").unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let addr = addr.parse().map_err(|_| ConfigError::Invalid {
            name: "CREDITS_ADDR",
            message: format!("{addr:?} is not a socket address like 127.0.0.1:8080"),
        })?;
        let admin_token = get("CREDITS_ADMIN_TOKEN").map(Secret::new);
        if admin_token.as_ref().is_some_and(|token| token.expose().len() < MIN_ADMIN_TOKEN_LEN) {
            return Err(ConfigError::Invalid {
                name: "CREDITS_ADMIN_TOKEN",
                message: format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters (try `openssl rand -hex 32`)"),
            });
        }
        let packages_file = get("CREDITS_PACKAGES").map(PathBuf::from);
        let log_format = match get("CREDITS_LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "CREDITS_LOG_FORMAT",
                    message: format!("{other:?} is neither json nor pretty"),
                });
            }
        };
        // A positive number of milliseconds, when the variable is set.
        let millis = |name: &'static str| -> Result<Option<Duration>, ConfigError> {
            get(name)
                .map(|value| {
                    value.parse::<u64>().ok().filter(|ms| *ms > 0).map(Duration::from_millis).ok_or_else(|| {
                        ConfigError::Invalid {
                            name,
                            message: format!("{value:?} is not a positive number of milliseconds"),
                        }
                    })
                })
                .transpose()
        };
        let stripe_timeout = millis("CREDITS_STRIPE_TIMEOUT_MS")?.unwrap_or(Duration::from_secs(10));
        let stripe = get("STRIPE_SECRET_KEY").map(|key| StripeConfig {
            secret_key: Secret::new(key),
            api_base: get("STRIPE_API_BASE"),
            timeout: stripe_timeout,
        });
        let mut limits = Limits::default();
        if let Some(keepalive) = millis("CREDITS_WS_KEEPALIVE_MS")? {
            limits.ws_keepalive = keepalive;
        }
        if let Some(timeout) = millis("CREDITS_WS_INIT_TIMEOUT_MS")? {
            limits.ws_init_timeout = timeout;
        }
        let flag = |name: &'static str, default: bool| -> Result<bool, ConfigError> {
            match get(name).map(|value| value.to_ascii_lowercase()).as_deref() {
                None => Ok(default),
                Some("true" | "1" | "yes" | "on") => Ok(true),
                Some("false" | "0" | "no" | "off") => Ok(false),
                Some(other) => {
                    Err(ConfigError::Invalid { name, message: format!("{other:?} is neither true nor false") })
                }
            }
        };
        limits.introspection = flag("CREDITS_INTROSPECTION", true)?;
        limits.trust_proxy = flag("CREDITS_TRUST_PROXY", false)?;
        limits.rate_limit = match get("CREDITS_RATE_LIMIT").as_deref() {
            None => limits.rate_limit,
            Some("off") => None,
            Some(value) => Some(value.parse::<std::num::NonZeroU32>().map_err(|_| ConfigError::Invalid {
                name: "CREDITS_RATE_LIMIT",
                message: format!("{value:?} is neither a positive number of requests per second nor off"),
            })?),
        };
        let count = |name: &'static str| -> Result<Option<usize>, ConfigError> {
            get(name)
                .map(|value| {
                    value.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| ConfigError::Invalid {
                        name,
                        message: format!("{value:?} is not a positive number"),
                    })
                })
                .transpose()
        };
        if let Some(max) = count("CREDITS_WS_MAX_CONNECTIONS_PER_TOKEN")? {
            limits.ws_max_connections_per_token = max;
        }
        if let Some(max) = count("CREDITS_QUERY_COMPLEXITY")? {
            limits.query_complexity = max;
        }
        let graphiql = flag("CREDITS_GRAPHIQL", true)?;
        let db_statement_timeout = millis("CREDITS_DB_STATEMENT_TIMEOUT_MS")?.unwrap_or(Duration::from_secs(5));
        let cors_origins = get("CREDITS_CORS_ORIGINS")
            .map(|value| value.split(',').map(|origin| origin.trim().to_owned()).filter(|o| !o.is_empty()).collect())
            .unwrap_or_default();
        let trusted_proxies = get("CREDITS_TRUSTED_PROXIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|cidr| !cidr.is_empty())
            .map(|cidr| {
                // A bare address is a network of one.
                cidr.parse::<ipnet::IpNet>()
                    .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| ConfigError::Invalid {
                        name: "CREDITS_TRUSTED_PROXIES",
                        message: format!("{cidr:?} is not a CIDR like 10.0.0.0/8 or an address"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let metrics_token = get("CREDITS_METRICS_TOKEN").map(Secret::new);
        if metrics_token.as_ref().is_some_and(|token| token.expose().len() < MIN_ADMIN_TOKEN_LEN) {
            return Err(ConfigError::Invalid {
                name: "CREDITS_METRICS_TOKEN",
                message: format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters (try `openssl rand -hex 32`)"),
            });
        }
        let metrics_addr = get("CREDITS_METRICS_ADDR")
            .map(|addr| {
                addr.parse().map_err(|_| ConfigError::Invalid {
                    name: "CREDITS_METRICS_ADDR",
                    message: format!("{addr:?} is not a socket address like 127.0.0.1:9090"),
                })
            })
            .transpose()?;
        let otlp = match get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(endpoint) => {
                let json = match get("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
                    None | Some("http/protobuf") => false,
                    Some("http/json") => true,
                    Some(other) => {
                        return Err(ConfigError::Invalid {
                            name: "OTEL_EXPORTER_OTLP_PROTOCOL",
                            message: format!("{other:?}: only http/protobuf and http/json are supported"),
                        });
                    }
                };
                let service_name = get("OTEL_SERVICE_NAME").unwrap_or_else(|| "credits".to_owned());
                Some(OtlpConfig { endpoint, json, service_name })
            }
            None => None,
        };
        let mut webhooks = WebhookConfig {
            allow_http: flag("CREDITS_WEBHOOK_ALLOW_HTTP", false)?,
            allow_private: flag("CREDITS_WEBHOOK_ALLOW_PRIVATE", false)?,
            ..WebhookConfig::default()
        };
        if let Some(schedule) = get("CREDITS_WEBHOOK_RETRY_SCHEDULE") {
            webhooks.retry_schedule = schedule
                .split(',')
                .filter(|part| !part.trim().is_empty())
                .map(|part| {
                    parse_duration(part).ok_or_else(|| ConfigError::Invalid {
                        name: "CREDITS_WEBHOOK_RETRY_SCHEDULE",
                        message: format!("{part:?} is not a duration like 500ms, 5s, 5m, 2h or 1d"),
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        Ok(Self {
            database_url: get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            addr,
            admin_token,
            packages_file,
            checkout_success_url: get("CREDITS_CHECKOUT_SUCCESS_URL"),
            checkout_cancel_url: get("CREDITS_CHECKOUT_CANCEL_URL"),
            stripe,
            stripe_webhook_secret: get("STRIPE_WEBHOOK_SECRET").map(Secret::new),
            cors_origins,
            graphiql,
            log_format,
            log_filter: get("RUST_LOG").unwrap_or_else(|| "info".to_owned()),
            limits,
            db_statement_timeout,
            trusted_proxies,
            webhooks,
            secrets_key: get("CREDITS_SECRETS_KEY").map(Secret::new),
            metrics_token,
            metrics_addr,
            otlp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_retry_schedules_parse_or_are_refused() {
        let schedule = config(&[("CREDITS_WEBHOOK_RETRY_SCHEDULE", "500ms, 1s,2m,1h,1d")]).expect("config");
        let expected = [500, 1_000, 120_000, 3_600_000, 86_400_000].map(Duration::from_millis);
        assert_eq!(schedule.webhooks.retry_schedule, expected);
        assert_eq!(config(&[]).expect("config").webhooks.retry_schedule.len(), 7);
        for bad in ["5", "5x", "s", "-1s", "1.5s"] {
            assert!(config(&[("CREDITS_WEBHOOK_RETRY_SCHEDULE", bad)]).is_err(), "{bad}");
        }
    }

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: std::collections::HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_need_no_environment() {
        let config = config(&[]).expect("defaults");
        assert_eq!(config.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(config.addr.to_string(), DEFAULT_ADDR);
        assert!(config.admin_token.is_none() && config.stripe.is_none() && config.stripe_webhook_secret.is_none());
        assert_eq!(config.packages_file, None);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("CREDITS_ADDR", "nowhere"),
            ("CREDITS_ADMIN_TOKEN", "short"),
            ("CREDITS_LOG_FORMAT", "xml"),
            ("CREDITS_STRIPE_TIMEOUT_MS", "0"),
            ("CREDITS_WS_KEEPALIVE_MS", "soon"),
            ("CREDITS_RATE_LIMIT", "0"),
            ("CREDITS_RATE_LIMIT", "fast"),
            ("CREDITS_INTROSPECTION", "maybe"),
            ("CREDITS_DB_STATEMENT_TIMEOUT_MS", "-1"),
            ("CREDITS_WS_MAX_CONNECTIONS_PER_TOKEN", "0"),
        ] {
            let error = config(&[(name, value)]).expect_err(name).to_string();
            assert!(error.starts_with(name), "{error}");
        }
    }

    #[test]
    fn fair_use_variables_are_read() {
        let config = config(&[
            ("CREDITS_RATE_LIMIT", "off"),
            ("CREDITS_INTROSPECTION", "false"),
            ("CREDITS_TRUST_PROXY", "true"),
            ("CREDITS_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7,fd00::/8"),
            ("CREDITS_DB_STATEMENT_TIMEOUT_MS", "250"),
            ("CREDITS_WS_MAX_CONNECTIONS_PER_TOKEN", "2"),
        ])
        .expect("config");
        assert!(config.limits.rate_limit.is_none() && !config.limits.introspection && config.limits.trust_proxy);
        let proxies: Vec<String> = config.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(proxies, ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]);
        assert!(matches!(
            self::tests::config(&[("CREDITS_TRUSTED_PROXIES", "10.0.0.0/33")]),
            Err(ConfigError::Invalid { name: "CREDITS_TRUSTED_PROXIES", .. })
        ));
        assert_eq!(config.db_statement_timeout, Duration::from_millis(250));
        assert_eq!(config.limits.ws_max_connections_per_token, 2);
        let defaults = super::Limits::default();
        assert_eq!(defaults.rate_limit.map(|rate| rate.get()), Some(1_000));
        assert!(defaults.introspection);
    }

    #[test]
    fn secrets_do_not_print() {
        let config =
            config(&[("CREDITS_ADMIN_TOKEN", "a-very-secret-admin-token"), ("STRIPE_SECRET_KEY", "sk_test_x")])
                .expect("config");
        let printed = format!("{config:?}");
        assert!(!printed.contains("a-very-secret") && !printed.contains("sk_test_x"), "{printed}");
    }
}
