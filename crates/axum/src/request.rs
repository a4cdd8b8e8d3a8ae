//! Reading a request the way Cloakroom does: where the session token is (`Authorization: Bearer`
//! or the session cookie), whether the method changes state, and whether its origin is allowed.
//! Shared by this crate's layer and by the Cloakroom server, so both judge requests alike.

use axum::http::{HeaderMap, Method, header};

/// How the caller presented its session token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The session cookie (a browser): CSRF rules apply.
    Cookie,
    /// `Authorization: Bearer` (a program): browsers never add it on their own, so no CSRF.
    Bearer,
}

/// An `Authorization` header that is not `Bearer <token>`: refused rather than ignored, so a
/// client never falls back to a cookie it did not mean to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadAuthorization;

/// The token a request carries, and how: the bearer token if there is an `Authorization`
/// header, else the first cookie named `cookie_name`.
pub fn credential<'a>(
    headers: &'a HeaderMap,
    cookie_name: &str,
) -> Result<Option<(&'a str, Via)>, BadAuthorization> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value.to_str().map_err(|_| BadAuthorization)?;
        let (scheme, token) = text.split_once(' ').ok_or(BadAuthorization)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(BadAuthorization);
        }
        return Ok(Some((token.trim(), Via::Bearer)));
    }
    Ok(find_cookie(headers, cookie_name).map(|t| (t, Via::Cookie)))
}

/// The first cookie named `name` across all `Cookie` headers. Works on bytes (a session check
/// runs this on every request); only the value found must be UTF-8, and a value that is not is
/// skipped like a missing one.
pub fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let name = name.as_bytes();
    headers.get_all(header::COOKIE).iter().find_map(|v| {
        v.as_bytes().split(|b| *b == b';').find_map(|pair| {
            let pair = pair.trim_ascii_start();
            let value = pair.strip_prefix(name)?.strip_prefix(b"=")?;
            let value = value.trim_ascii_end();
            let value =
                value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
            std::str::from_utf8(value).ok()
        })
    })
}

/// Whether a state-changing request may come from where it says: an `Origin` header, when
/// present, must be one of `allowed` (lowercase `scheme://host[:port]`); without one,
/// `Sec-Fetch-Site`, when present, must be `same-origin` or `none`.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN) {
        return origin.to_str().is_ok_and(|o| allowed.contains(&o.to_ascii_lowercase()));
    }
    matches!(
        headers.get("sec-fetch-site").map(|v| v.as_bytes()),
        None | Some(b"same-origin") | Some(b"none")
    )
}

/// Whether the method may change state.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn bearer_wins_and_a_bad_authorization_is_an_error() {
        let h = headers(&[("authorization", "Bearer crs_x"), ("cookie", "c=crs_y")]);
        assert_eq!(credential(&h, "c").unwrap(), Some(("crs_x", Via::Bearer)));
        let h = headers(&[("authorization", "Basic x"), ("cookie", "c=crs_y")]);
        assert_eq!(credential(&h, "c"), Err(BadAuthorization));
        let h = headers(&[("cookie", "a=1; c=\"crs_y\""), ("cookie", "c=other")]);
        assert_eq!(credential(&h, "c").unwrap(), Some(("crs_y", Via::Cookie)));
        assert_eq!(credential(&HeaderMap::new(), "c").unwrap(), None);
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example".to_owned()];
        assert!(origin_allowed(&headers(&[("origin", "https://APP.example")]), &allowed));
        assert!(!origin_allowed(&headers(&[("origin", "https://evil.example")]), &allowed));
        assert!(!origin_allowed(&headers(&[("sec-fetch-site", "cross-site")]), &allowed));
        assert!(origin_allowed(&headers(&[("sec-fetch-site", "same-origin")]), &allowed));
        assert!(origin_allowed(&HeaderMap::new(), &allowed));
    }
}
