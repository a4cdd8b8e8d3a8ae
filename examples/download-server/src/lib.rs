//! A download server that holds no session state: it serves `GET /files/{path}` only for a grant
//! (`?grant=v4.public…` or `Authorization: Bearer v4.public…`) that Cloakroom issued for this
//! service's audience, for action `download` and resource `/{path}`, that has not been used here
//! before and was not revoked. Keys come from Cloakroom's `/v1/keys`, revocations from its
//! `/v1/revocations` feed; every grant is refused while that feed is down.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cloakroom_grant::{GrantError, Verifier};

/// What the handlers share.
#[derive(Clone)]
pub struct Files {
    /// Verifies grants for this service.
    pub verifier: Arc<Verifier>,
    /// The directory served.
    pub root: PathBuf,
}

/// The router.
pub fn app(files: Files) -> Router {
    Router::new().route("/files/{*path}", get(download)).with_state(files)
}

#[derive(serde::Deserialize)]
struct GrantQuery {
    grant: Option<String>,
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
}

async fn download(
    State(files): State<Files>,
    UrlPath(path): UrlPath<String>,
    Query(q): Query<GrantQuery>,
    headers: HeaderMap,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = q.grant.as_deref().or(bearer) else {
        return refuse(StatusCode::UNAUTHORIZED, "a grant is required");
    };
    // Check the request before using the grant up, so a grant sent to the wrong URL survives.
    let grant = match files.verifier.verify(token) {
        Ok(g) => g,
        Err(GrantError::RevocationsUnavailable) => {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "cannot vouch for grants right now");
        }
        Err(e) => return refuse(StatusCode::FORBIDDEN, &e.to_string()),
    };
    let wanted = format!("/{path}");
    if grant.claims.action.as_deref() != Some("download")
        || grant.claims.resource.as_deref() != Some(wanted.as_str())
    {
        return refuse(StatusCode::FORBIDDEN, "the grant is for another file or action");
    }
    let Some(file) = safe_join(&files.root, &path) else {
        return refuse(StatusCode::NOT_FOUND, "no such file");
    };
    // Verified above: only spend it now (one signature check per download, not two).
    if let Err(e) = files.verifier.consume(&grant, std::time::SystemTime::now()) {
        return refuse(StatusCode::FORBIDDEN, &e.to_string());
    }
    match tokio::fs::read(&file).await {
        Ok(bytes) => ([(header::CACHE_CONTROL, "no-store")], bytes).into_response(),
        Err(_) => refuse(StatusCode::NOT_FOUND, "no such file"),
    }
}

/// `root/path` when `path` stays inside `root` (no `..`, no absolute parts).
fn safe_join(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path);
    rel.components().all(|c| matches!(c, Component::Normal(_))).then(|| root.join(rel))
}

/// Starts following Cloakroom at `base_url` (keys and revocations) and returns the verifier.
pub fn follow(base_url: &str, audience: &str) -> Arc<Verifier> {
    let verifier = Arc::new(Verifier::new(audience, cloakroom_grant::KeySet::default()));
    cloakroom_grant::client::follow(reqwest::Client::new(), Arc::clone(&verifier), base_url.into());
    verifier
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        let root = Path::new("/srv/files");
        assert_eq!(safe_join(root, "a/b.txt"), Some(PathBuf::from("/srv/files/a/b.txt")));
        assert_eq!(safe_join(root, "../etc/passwd"), None);
        assert_eq!(safe_join(root, "a/../../x"), None);
        assert_eq!(safe_join(root, "/etc/passwd"), None);
    }
}
