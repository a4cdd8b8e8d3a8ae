//! `download-server`: serves `FILES_DIR` on `LISTEN` (default 127.0.0.1:8080) for grants that
//! Cloakroom at `CLOAKROOM_URL` issued for `AUDIENCE` (default `files`).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let base = var("CLOAKROOM_URL", "http://127.0.0.1:7878");
    let audience = var("AUDIENCE", "files");
    let root = var("FILES_DIR", ".");
    let listen = var("LISTEN", "127.0.0.1:8080");
    let verifier = cloakroom_download_server::follow(&base, &audience);
    let app = cloakroom_download_server::app(cloakroom_download_server::Files {
        verifier,
        root: root.into(),
    });
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("download-server: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("download-server listening on http://{listen}, grants from {base} for {audience}");
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("download-server: {e}");
            ExitCode::FAILURE
        }
    }
}
