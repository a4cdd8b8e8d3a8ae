//! Prometheus metrics: one process-wide recorder, rendered at `/metrics`, and the request
//! middleware that counts and times every routed request by route and status.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Instant;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// CPU, memory, threads and open file descriptors against the limit (`process_*`, as the
/// Prometheus Go client names them), read at each scrape.
static PROCESS: std::sync::LazyLock<metrics_process::Collector> =
    std::sync::LazyLock::new(metrics_process::Collector::default);

/// The page `/metrics` serves: the process metrics are read first.
pub fn render(handle: &PrometheusHandle) -> String {
    PROCESS.collect();
    handle.render()
}

/// The process-wide recorder's handle, installing it on first use. If another recorder was
/// installed first (an embedding app's), a detached one still renders Cloakroom's own page.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                // From 25 µs: a cached check takes a few microseconds, an uncached one tens to
                // hundreds, so the low buckets are where checks are told apart.
                .set_buckets(&[
                    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            describe();
            PROCESS.describe();
            metrics::gauge!("cloakroom_build_info", "version" => env!("CARGO_PKG_VERSION"))
                .set(1.0);
            // Without upkeep the recorder keeps every histogram sample until a scrape: a server
            // nobody scrapes would grow without bound. Drain them every 5 seconds.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

/// Every counter Cloakroom exports, with its help text.
const COUNTERS: &[(&str, &str)] = &[
    ("cloakroom_http_requests_total", "HTTP requests by route and status"),
    ("cloakroom_logins_total", "Password logins by outcome"),
    ("cloakroom_auth_checks_total", "Forward-auth checks by outcome"),
    ("cloakroom_revocations_total", "Sessions revoked, by reason"),
    ("cloakroom_sessions_created_total", "Sessions created, by how"),
    ("cloakroom_expired_sessions_swept_total", "Expired sessions deleted by the sweep"),
    ("cloakroom_store_errors_total", "Failed store operations by operation and kind"),
    ("cloakroom_cache_hits_total", "Checks answered from the node-local cache"),
    ("cloakroom_cache_misses_total", "Checks that read the store"),
    ("cloakroom_invalidations_received_total", "Invalidations received from the store's feed"),
    ("cloakroom_grants_issued_total", "Grants issued"),
    ("cloakroom_grants_redeemed_total", "Grants redeemed or exchanged, by how"),
];

/// Every gauge, with its help text.
const GAUGES: &[(&str, &str)] = &[
    ("cloakroom_build_info", "Always 1; the version in its label"),
    (
        "cloakroom_sessions_active",
        "Live sessions in the store, counted every 15 s (SQLite; absent where a count is not cheap)",
    ),
    (
        "cloakroom_bus_connected",
        "1 while the store's invalidation feed is up (the cache serves only then)",
    ),
    ("cloakroom_revocation_feed_subscribers", "Open GET /v1/revocations streams"),
];

/// Every histogram (all in seconds), with its help text.
const HISTOGRAMS: &[(&str, &str)] = &[
    ("cloakroom_http_request_duration_seconds", "HTTP request latency by route"),
    (
        "cloakroom_store_operation_duration_seconds",
        "Store operations' latency by operation (cache hits never reach the store)",
    ),
    (
        "cloakroom_revocation_propagation_seconds",
        "From a change on any node to its invalidation here",
    ),
];

fn describe() {
    for (name, help) in COUNTERS {
        metrics::describe_counter!(*name, *help);
    }
    for (name, help) in GAUGES {
        metrics::describe_gauge!(*name, *help);
    }
    for (name, help) in HISTOGRAMS {
        metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help);
    }
}

/// Metric handles of one route: a request only bumps atomics.
struct RouteMetrics {
    route: Box<str>,
    duration: Histogram,
    /// Request counters by status, registered on first use (a route answers few statuses).
    by_status: Vec<(u16, Counter)>,
}

impl RouteMetrics {
    fn new(route: &str) -> Self {
        Self {
            route: route.into(),
            duration: metrics::histogram!("cloakroom_http_request_duration_seconds", "route" => route.to_owned()),
            by_status: Vec::new(),
        }
    }

    fn count(&mut self, status: u16) {
        if let Some((_, c)) = self.by_status.iter().find(|(s, _)| *s == status) {
            c.increment(1);
            return;
        }
        let c = metrics::counter!(
            "cloakroom_http_requests_total", "route" => self.route.to_string(), "status" => status.to_string()
        );
        c.increment(1);
        self.by_status.push((status, c));
    }
}

thread_local! {
    /// Each worker thread's handles by route (a router has a few dozen), so a request finds its
    /// route's handles with a short scan and no lock, no hashing, no reference count.
    static ROUTES: RefCell<Vec<RouteMetrics>> = const { RefCell::new(Vec::new()) };
}

/// Counts and times a finished request by its route (the matched pattern without the base
/// path, or the fast path's own) and status.
pub fn record_route(route: &str, start: Instant, status: axum::http::StatusCode) {
    let elapsed = start.elapsed().as_secs_f64();
    ROUTES.with_borrow_mut(|routes| {
        let i = match routes.iter().position(|m| *m.route == *route) {
            Some(i) => i,
            None => {
                routes.push(RouteMetrics::new(route));
                routes.len() - 1
            }
        };
        let m = &mut routes[i];
        m.duration.record(elapsed);
        m.count(status.as_u16());
    });
}

/// Counts a forward-auth check by outcome (`allowed`, `unauthenticated`, `forbidden`, `error`).
pub fn auth_check(outcome: &'static str) {
    static COUNTERS: OnceLock<[Counter; 4]> = OnceLock::new();
    const OUTCOMES: [&str; 4] = ["allowed", "unauthenticated", "forbidden", "error"];
    let counters = COUNTERS.get_or_init(|| {
        OUTCOMES.map(|o| metrics::counter!("cloakroom_auth_checks_total", "outcome" => o))
    });
    if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
        counters[i].increment(1);
    }
}

/// One line of the access log (target `cloakroom::access`, when `access_log` is on): the
/// route's pattern rather than the raw path (which may carry ids or tokens in a query), and the
/// session's public id, never its token.
pub fn access_log(
    method: &axum::http::Method,
    route: &str,
    status: axum::http::StatusCode,
    start: Instant,
    session: Option<&String>,
) {
    tracing::info!(
        target: "cloakroom::access",
        method = %method,
        route,
        status = status.as_u16(),
        duration_ms = start.elapsed().as_secs_f64() * 1000.0,
        session = session.map_or("-", String::as_str),
        "request"
    );
}
