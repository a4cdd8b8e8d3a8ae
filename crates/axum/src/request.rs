//! Reading a request the way Cloakroom does: where the session token is (`Authorization: Bearer`
//! or the session cookie), whether the method changes state, and whether its origin is allowed.
//! Shared by this crate's layer and by the Cloakroom server, so both judge requests alike.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};

/// `X-CSRF-Token`, where cookie callers send the session's CSRF token. Header names made once: a
/// name given as text is parsed and checked again on every lookup.
pub const X_CSRF_TOKEN: HeaderName = HeaderName::from_static("x-csrf-token");
/// `Sec-Fetch-Site`.
pub const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

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
    headers.get_all(header::COOKIE).iter().find_map(|v| cookie_in(v.as_bytes(), name))
}

/// The first cookie named `name` in one `Cookie` header. Finds each `=` (with `memchr`), and
/// takes the pair whose name ends there: what precedes it is `name`, with only whitespace between
/// it and the previous `;` or the start. Same answers as splitting on `;` and trimming each pair,
/// at about a third of the cost.
fn cookie_in<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a str> {
    memchr::memchr_iter(b'=', header).find_map(|eq| {
        let start = eq.checked_sub(name.len())?;
        if &header[start..eq] != name {
            return None;
        }
        let before = header[..start].iter().rev().find(|b| !b.is_ascii_whitespace());
        if before.is_some_and(|b| *b != b';') {
            return None;
        }
        let rest = &header[eq + 1..];
        let value = rest[..memchr::memchr(b';', rest).unwrap_or(rest.len())].trim_ascii_end();
        let value = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
        std::str::from_utf8(value).ok()
    })
}

/// Whether a state-changing request may come from where it says: an `Origin` header, when
/// present, must be one of `allowed` (lowercase `scheme://host[:port]`); without one,
/// `Sec-Fetch-Site`, when present, must be `same-origin` or `none`.
///
/// A browser sends each of these headers at most once. A request with two of either is refused:
/// looking only at the first would let a forged second one (or a proxy that appends its own)
/// decide, and no honest client needs two.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = single(headers, &header::ORIGIN) else { return false };
    if origin.is_some() {
        return allowed_origin(headers, allowed).is_some();
    }
    match single(headers, &SEC_FETCH_SITE) {
        Some(site) => matches!(site.map(|v| v.as_bytes()), None | Some(b"same-origin" | b"none")),
        None => false,
    }
}

/// The request's one `Origin`, when it is among `allowed` (compared lowercase): the entry of
/// `allowed` it matched. Two `Origin` headers match nothing.
pub fn allowed_origin<'a>(headers: &HeaderMap, allowed: &'a [String]) -> Option<&'a str> {
    let origin = single(headers, &header::ORIGIN)??.to_str().ok()?.to_ascii_lowercase();
    allowed.iter().find(|a| **a == origin).map(String::as_str)
}

/// Whether the request is `Origin: null` with `Sec-Fetch-Site: same-origin` (one of each): a
/// same-origin page under `Referrer-Policy: no-referrer`. A page with an opaque origin (a
/// sandboxed frame, a `data:` URL) is always `cross-site`, so this is no way in for one.
pub fn null_origin_same_origin(headers: &HeaderMap) -> bool {
    let origin = single(headers, &header::ORIGIN).flatten();
    let site = single(headers, &SEC_FETCH_SITE).flatten();
    origin.is_some_and(|o| o == "null") && site.is_some_and(|s| s == "same-origin")
}

/// Whether the browser itself says that a state-changing request comes from this origin:
/// `Sec-Fetch-Site: same-origin` (or `none`, a request the user made directly), or, from a
/// browser without Fetch Metadata, an `Origin` among `allowed`. Anything else, including
/// `same-site` (a sibling subdomain), two values of either header, or neither header, is no.
///
/// This is CSRF protection where the synchronizer token cannot travel: an HTML form behind a
/// forward-auth proxy. Every browser in support since 2023 sends `Sec-Fetch-Site`, and a page
/// on another origin cannot forge it or `Origin`.
pub fn browser_says_same_origin(headers: &HeaderMap, allowed: &[String]) -> bool {
    match single(headers, &SEC_FETCH_SITE) {
        None => false,
        Some(Some(site)) => matches!(site.as_bytes(), b"same-origin" | b"none"),
        Some(None) => allowed_origin(headers, allowed).is_some(),
    }
}

/// The one value of header `name`: `Some(None)` when absent, `None` when it appears more than
/// once.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Option<&'a HeaderValue>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    values.next().is_none().then_some(first)
}

/// Whether the method may change state.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_browser_vouches_only_with_one_same_origin_signal() {
        let allowed = ["https://app.example.com".to_owned()];
        let yes: &[&[(&'static str, &'static str)]] = &[
            &[("sec-fetch-site", "same-origin")],
            &[("sec-fetch-site", "none")],
            &[("sec-fetch-site", "same-origin"), ("origin", "https://app.example.com")],
            &[("origin", "https://APP.example.com")],
        ];
        for h in yes {
            assert!(browser_says_same_origin(&headers(h), &allowed), "{h:?}");
        }
        let no: &[&[(&'static str, &'static str)]] = &[
            &[],
            &[("sec-fetch-site", "same-site")],
            &[("sec-fetch-site", "cross-site"), ("origin", "https://app.example.com")],
            &[("sec-fetch-site", "same-origin"), ("sec-fetch-site", "same-origin")],
            &[("origin", "https://evil.example")],
            &[("origin", "null")],
            &[("origin", "https://app.example.com"), ("origin", "https://app.example.com")],
        ];
        for h in no {
            assert!(!browser_says_same_origin(&headers(h), &allowed), "{h:?}");
        }
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

    /// The cookie reader against the obvious one (split on `;`, trim, compare the name), on
    /// tricky headers and on random ones over a small alphabet.
    #[test]
    fn cookie_in_agrees_with_splitting() {
        fn reference<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a str> {
            header.split(|b| *b == b';').find_map(|pair| {
                let value = pair.trim_ascii_start().strip_prefix(name)?.strip_prefix(b"=")?;
                let value = value.trim_ascii_end();
                let value =
                    value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
                std::str::from_utf8(value).ok()
            })
        }
        let fixed: &[&[u8]] = &[
            b"c=1",
            b" c = 1",
            b"a=c=2; c=3",
            b"ac=1; c=2",
            b"c=\xff; c=ok",
            b"a=\"x; c=y\"; c=z",
            b";;c=;",
            b"c",
            b"=c=1",
            b"\tc=\"q\" ",
            b"c=1;c=2",
            b"xc=1;\r\nc=2",
        ];
        for h in fixed {
            assert_eq!(cookie_in(h, b"c"), reference(h, b"c"), "{:?}", String::from_utf8_lossy(h));
        }
        let alphabet = b"c=; \"a\t\xff";
        let mut seed = 0x853c_49e6_748f_ea9b_u64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 12) as usize;
            let h: Vec<u8> =
                (0..len).map(|i| alphabet[((seed >> (4 + 4 * i)) % 8) as usize]).collect();
            assert_eq!(
                cookie_in(&h, b"c"),
                reference(&h, b"c"),
                "{:?}",
                String::from_utf8_lossy(&h)
            );
            assert_eq!(cookie_in(&h, b"ca"), reference(&h, b"ca"));
        }
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

    #[test]
    fn several_origin_or_sec_fetch_site_headers_are_refused() {
        let allowed = vec!["https://app.example".to_owned()];
        let twice = [("origin", "https://app.example"), ("origin", "https://app.example")];
        assert!(!origin_allowed(&headers(&twice), &allowed));
        let mixed = [("origin", "https://app.example"), ("origin", "https://evil.example")];
        assert!(!origin_allowed(&headers(&mixed), &allowed));
        let sites = [("sec-fetch-site", "same-origin"), ("sec-fetch-site", "cross-site")];
        assert!(!origin_allowed(&headers(&sites), &allowed));
        let sites = [("sec-fetch-site", "same-origin"), ("sec-fetch-site", "same-origin")];
        assert!(!origin_allowed(&headers(&sites), &allowed));
    }
}
