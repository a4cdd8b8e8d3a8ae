//! The store URL: `postgres://…` or `postgresql://…`, with libpq's parameters as sqlx reads them
//! (`sslmode`, `sslrootcert`, `application_name`, `options`, …) and three of Cloakroom's own,
//! taken out before the URL reaches the driver:
//!
//! - `max_connections` (default 10, 1 to 1000): the pool's bound on open connections;
//! - `connect_timeout` (seconds, default 2, as in libpq): how long connecting, or waiting for a
//!   free pooled connection, may take;
//! - `statement_timeout` (milliseconds, default 5000): how long one store operation may take, all
//!   its statements included, before it fails as unavailable (the caller answers 503). It is a
//!   deadline kept by Cloakroom, not the server setting of that name, so it also holds when the
//!   server or the network is gone silent, and it works through PgBouncer (which refuses the
//!   startup `options` a server-side timeout needs).
//!
//! Nothing here ever puts the URL (and the password it may hold) into an error message.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

/// The default pool bound.
pub(crate) const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// The default bound on connecting.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default bound on one store operation.
pub(crate) const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_millis(5000);

/// A parsed store URL.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What the driver connects with.
    pub connect: PgConnectOptions,
    /// Most open connections in the pool.
    pub max_connections: u32,
    /// Bound on connecting and on waiting for a pooled connection.
    pub connect_timeout: Duration,
    /// Bound on one store operation.
    pub statement_timeout: Duration,
}

/// Whether `url` names a PostgreSQL store.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Settings {
    /// Parses a store URL; the error says what is wrong without repeating the URL.
    pub fn parse(url: &str) -> Result<Settings, String> {
        if !is_postgres_url(url) {
            return Err("a PostgreSQL store URL starts with postgres:// or postgresql://".into());
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut max_connections = DEFAULT_MAX_CONNECTIONS;
        let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;
        let mut statement_timeout = DEFAULT_STATEMENT_TIMEOUT;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "max_connections" => {
                    max_connections = number(key, value, 1, 1000)?;
                }
                "connect_timeout" => {
                    connect_timeout = Duration::from_secs(number(key, value, 1, 60)?);
                }
                "statement_timeout" => {
                    statement_timeout = Duration::from_millis(number(key, value, 100, 600_000)?);
                }
                _ => rest.push(pair),
            }
        }
        let driver_url =
            if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
        let connect = PgConnectOptions::from_str(&driver_url)
            .map_err(|e| format!("not a usable PostgreSQL URL: {}", scrub(&e.to_string())))?
            // Cloakroom stores no floating-point values; without this startup parameter the
            // connection also goes through a PgBouncer that does not know it.
            .extra_float_digits(None);
        Ok(Settings { connect, max_connections, connect_timeout, statement_timeout })
    }
}

/// `url` fit for a log line: without its credentials, and without its parameters (libpq
/// accepts `password=` there too).
pub fn redact(url: &str) -> String {
    let base = url.split_once('?').map_or(url, |(b, _)| b);
    scrub(base)
}

fn number<T: TryFrom<u64>>(key: &str, value: &str, min: u64, max: u64) -> Result<T, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("the URL parameter `{key}` must be a number from {min} to {max}"))
}

/// A driver message with anything after `://` up to an `@` removed, in case it quotes the URL.
fn scrub(message: &str) -> String {
    match (message.find("://"), message.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            format!("{}<credentials>{}", &message[..s + 3], &message[at..])
        }
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn own_parameters_are_taken_out_and_bounded() {
        let s = Settings::parse(
            "postgres://u:secret@db.example:6432/app?sslmode=disable&max_connections=4&connect_timeout=3&statement_timeout=250",
        )
        .unwrap();
        assert_eq!(s.max_connections, 4);
        assert_eq!(s.connect_timeout, Duration::from_secs(3));
        assert_eq!(s.statement_timeout, Duration::from_millis(250));
        assert_eq!(s.connect.get_port(), 6432);
        assert_eq!(s.connect.get_database(), Some("app"));

        let d = Settings::parse("postgresql://u@localhost/app").unwrap();
        assert_eq!(d.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(d.statement_timeout, DEFAULT_STATEMENT_TIMEOUT);

        for bad in [
            "postgres://u@h/db?max_connections=0",
            "postgres://u@h/db?max_connections=lots",
            "postgres://u@h/db?connect_timeout=0",
            "postgres://u@h/db?statement_timeout=99999999",
        ] {
            let err = Settings::parse(bad).unwrap_err();
            assert!(err.contains("URL parameter"), "{err}");
        }
        assert!(Settings::parse("mysql://h/db").is_err());
    }

    #[test]
    fn redacted_urls_keep_no_secret() {
        assert_eq!(
            redact("postgres://u:pw@db:5432/app?password=pw2&sslmode=require"),
            "postgres://<credentials>@db:5432/app"
        );
        assert_eq!(redact("postgresql://db/app"), "postgresql://db/app");
    }

    #[test]
    fn errors_never_repeat_the_password() {
        let err = Settings::parse("postgres://u:hunter2@h:notaport/db").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
