//! Prometheus metrics: one process-wide recorder, rendered at `/metrics`, and the request
//! middleware that counts and times every routed request by route and status.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use axum::extract::MatchedPath;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder's handle, installing it on first use. If another recorder was
/// installed first (an embedding app's), a detached one still renders Cloakroom's own page.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            describe();
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

fn describe() {
    metrics::describe_counter!(
        "cloakroom_http_requests_total",
        "HTTP requests by route and status"
    );
    metrics::describe_histogram!(
        "cloakroom_http_request_duration_seconds",
        "HTTP request latency by route"
    );
    metrics::describe_counter!("cloakroom_logins_total", "Password logins by outcome");
    metrics::describe_counter!("cloakroom_auth_checks_total", "Forward-auth checks by outcome");
    metrics::describe_counter!("cloakroom_revocations_total", "Sessions revoked, by reason");
    metrics::describe_counter!("cloakroom_sessions_created_total", "Sessions created, by how");
    metrics::describe_counter!(
        "cloakroom_expired_sessions_swept_total",
        "Expired sessions deleted by the sweep"
    );
}

/// Metric handles of one route, registered once: a request only bumps atomics.
struct RouteMetrics {
    duration: Histogram,
    by_status: RwLock<HashMap<u16, Counter>>,
}

static ROUTES: OnceLock<RwLock<HashMap<String, Arc<RouteMetrics>>>> = OnceLock::new();

fn route_metrics(route: &str) -> Arc<RouteMetrics> {
    let routes = ROUTES.get_or_init(Default::default);
    if let Some(m) = routes.read().ok().and_then(|r| r.get(route).cloned()) {
        return m;
    }
    let m = Arc::new(RouteMetrics {
        duration: metrics::histogram!("cloakroom_http_request_duration_seconds", "route" => route.to_owned()),
        by_status: RwLock::default(),
    });
    if let Ok(mut r) = routes.write() {
        r.entry(route.to_owned()).or_insert_with(|| Arc::clone(&m));
    }
    m
}

impl RouteMetrics {
    fn count(&self, route: &str, status: u16) {
        if let Some(c) = self.by_status.read().ok().and_then(|m| m.get(&status).cloned()) {
            c.increment(1);
            return;
        }
        let c = metrics::counter!(
            "cloakroom_http_requests_total", "route" => route.to_owned(), "status" => status.to_string()
        );
        c.increment(1);
        if let Ok(mut m) = self.by_status.write() {
            m.entry(status).or_insert(c);
        }
    }
}

/// Counts and times a finished request by its matched route and status.
pub fn record(route: Option<&MatchedPath>, start: Instant, status: axum::http::StatusCode) {
    let route = route.map_or("unmatched", MatchedPath::as_str);
    let m = route_metrics(route);
    m.duration.record(start.elapsed().as_secs_f64());
    m.count(route, status.as_u16());
}
