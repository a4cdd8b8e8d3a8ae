//! The strictest ceiling for HTTP benchmarks: a bare hyper 1 handler (no router, no axum) that
//! answers every request with an empty 200, served like `cloakroom serve` serves (hyper's http1
//! connection builder, keep-alive, one task per connection, multi-threaded Tokio runtime).
//!
//! `cargo run --release -p cloakroom-server --example bare_hyper -- 127.0.0.1:7980`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::convert::Infallible;

use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

async fn ok(_: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    Ok(Response::new(Empty::new()))
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7980".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    println!("bare hyper listening on http://{}", listener.local_addr().unwrap());
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(ok))
                .await;
        });
    }
}
