//! The ceiling for HTTP benchmarks: a bare axum handler that answers `GET /v1/auth/check` with an
//! empty 200 and no session logic, on the same runtime settings as `cloakroom serve`.
//!
//! `cargo run --release -p cloakroom-server --example bare -- 127.0.0.1:7979`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7979".into());
    let app = Router::new().route("/v1/auth/check", get(|| async { axum::http::StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    println!("bare listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}
