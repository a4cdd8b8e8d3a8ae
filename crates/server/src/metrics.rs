//! Prometheus metrics: one process-wide recorder, rendered at `/metrics`, and the request
//! middleware that counts and times every routed request by route and status.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
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

/// Middleware: counts and times requests by matched route and status.
pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let response = next.run(req).await;
    let route = route.unwrap_or_else(|| "unmatched".into());
    let status = response.status().as_u16().to_string();
    metrics::histogram!("cloakroom_http_request_duration_seconds", "route" => route.clone())
        .record(start.elapsed().as_secs_f64());
    metrics::counter!("cloakroom_http_requests_total", "route" => route, "status" => status)
        .increment(1);
    response
}
