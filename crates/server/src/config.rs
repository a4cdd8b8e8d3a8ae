//! Configuration: raw settings from flags, `CLOAKROOM_*` environment variables and a TOML file
//! (precedence flag > env > file > default), validated into a [`Config`] the rest of the code
//! trusts. Unknown keys, unknown `CLOAKROOM_*` variables and invalid values are refused with a
//! message naming the key; so are insecure settings (a plain-HTTP public origin that is not
//! loopback, a cookie name without the `__Host-` prefix).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

mod proxies;

pub use proxies::TrustedProxies;

/// The default `max_sessions_per_user`: far above any person's devices, low enough that the
/// work a login, a listing or a revoke-all does over one user's sessions stays small.
pub const DEFAULT_MAX_SESSIONS_PER_USER: u32 = 100;

/// Settings as given, before validation. Every field is a flag (with its `CLOAKROOM_` variable)
/// and a key of the TOML file.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address to listen on: IP:PORT or localhost:PORT [default: 127.0.0.1:7878]
    #[arg(long, env = "CLOAKROOM_LISTEN", global = true)]
    pub listen: Option<String>,
    /// Serve /metrics only on this address (IP:PORT or localhost:PORT), not on `listen` [default: none]
    #[arg(long, env = "CLOAKROOM_METRICS_LISTEN", global = true)]
    pub metrics_listen: Option<String>,
    /// Serve every route (API, pages, health) under this path prefix, e.g. /auth [default: none]
    #[arg(long, env = "CLOAKROOM_BASE_PATH", global = true)]
    pub base_path: Option<String>,
    /// Store URL: sqlite:PATH (default sqlite:./cloakroom.db), redis://host:port[/db], redis+cluster://host:port,…, redis+sentinel://host:port,…/MASTER, postgres://user@host/db
    #[arg(long, env = "CLOAKROOM_STORE", global = true)]
    pub store: Option<String>,
    /// A direct postgres:// URL for the change listener, when the store URL goes through a transaction-pooling PgBouncer (default: the store URL)
    #[arg(long, env = "CLOAKROOM_STORE_LISTEN", global = true)]
    pub store_listen: Option<String>,
    /// PEM file of the CA(s) to trust for a rediss:// store, or a postgres:// one with sslmode=verify-full (default: the system's roots)
    #[arg(long, env = "CLOAKROOM_STORE_CA", global = true)]
    pub store_ca: Option<String>,
    /// The origin browsers use, e.g. https://app.example.com; drives the Origin check
    #[arg(long, env = "CLOAKROOM_PUBLIC_ORIGIN", global = true)]
    pub public_origin: Option<String>,
    /// Further origins allowed to make state-changing requests (comma-separated)
    #[arg(long, env = "CLOAKROOM_ALLOWED_ORIGINS", global = true, value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Origins whose pages may read API responses with credentials (CORS), e.g. an SPA's; each is also an allowed origin [default: none]
    #[arg(long, env = "CLOAKROOM_CORS_ORIGINS", global = true, value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Session cookie name; must start with __Host- [default: __Host-cloakroom]
    #[arg(long, env = "CLOAKROOM_COOKIE_NAME", global = true)]
    pub cookie_name: Option<String>,
    /// A session unused this long ends, e.g. 30m [default: 30m]
    #[arg(long, env = "CLOAKROOM_IDLE_TIMEOUT", global = true)]
    pub idle_timeout: Option<String>,
    /// A session ends this long after login, e.g. 12h [default: 12h]
    #[arg(long, env = "CLOAKROOM_ABSOLUTE_TIMEOUT", global = true)]
    pub absolute_timeout: Option<String>,
    /// Most sessions per user, 0 = no cap; the oldest is evicted [default: 100]
    #[arg(long, env = "CLOAKROOM_MAX_SESSIONS_PER_USER", global = true)]
    pub max_sessions_per_user: Option<String>,
    /// text or json [default: text]
    #[arg(long, env = "CLOAKROOM_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
    /// Log every request (method, route, status, duration, session id; never a token): true or false [default: false]
    #[arg(long, env = "CLOAKROOM_ACCESS_LOG", global = true)]
    pub access_log: Option<String>,
    /// Proxies whose X-Forwarded-For is believed (comma-separated IP addresses or networks, e.g. 10.0.0.0/8)
    #[arg(long, env = "CLOAKROOM_TRUSTED_PROXIES", global = true, value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// A client must send a request's headers within this long, e.g. 10s [default: 10s]
    #[arg(long, env = "CLOAKROOM_HEADER_TIMEOUT", global = true)]
    pub header_timeout: Option<String>,
    /// A client must send a request's whole body within this long, e.g. 10s [default: 10s]
    #[arg(long, env = "CLOAKROOM_BODY_TIMEOUT", global = true)]
    pub body_timeout: Option<String>,
    /// Most client connections open at once, 0 = the open-file limit less 64 [default: 0]
    #[arg(long, env = "CLOAKROOM_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<String>,
    /// Most password hashes computed at once [default: number of CPUs]
    #[arg(long, env = "CLOAKROOM_LOGIN_CONCURRENCY", global = true)]
    pub login_concurrency: Option<String>,
    /// Nice value (0 to 19) of the password-hashing threads, so checks get the CPU first [default: 10]
    #[arg(long, env = "CLOAKROOM_LOGIN_NICENESS", global = true)]
    pub login_niceness: Option<String>,
    /// The product name in the pages' titles and headers [default: Cloakroom]
    #[arg(long, env = "CLOAKROOM_BRAND_NAME", global = true)]
    pub brand_name: Option<String>,
    /// An image file (.svg, .png, .jpg, .webp, .gif; at most 256 KiB) shown in the pages' header
    #[arg(long, env = "CLOAKROOM_BRAND_LOGO", global = true)]
    pub brand_logo: Option<String>,
    /// The pages' accent colour, #rgb or #rrggbb
    #[arg(long, env = "CLOAKROOM_BRAND_COLOR", global = true)]
    pub brand_color: Option<String>,
    /// A directory whose .html files replace the built-in page templates of the same names
    #[arg(long, env = "CLOAKROOM_TEMPLATES_DIR", global = true)]
    pub templates_dir: Option<String>,
    /// A secret mixed into every password hash, kept apart from the store (env or file only)
    #[arg(skip)]
    #[serde(default)]
    pub password_pepper: Option<String>,
    /// The key that seals grant-signing keys in the store: 32 random bytes as base64url
    /// (`cloakroom keys secret` prints one). Env or file only
    #[arg(skip)]
    #[serde(default)]
    pub grant_key: Option<String>,
}

/// Every key, for the unknown-variable check.
const KEYS: &[&str] = &[
    "listen",
    "base_path",
    "metrics_listen",
    "store",
    "store_listen",
    "store_ca",
    "public_origin",
    "allowed_origins",
    "cors_origins",
    "cookie_name",
    "idle_timeout",
    "absolute_timeout",
    "max_sessions_per_user",
    "log_format",
    "access_log",
    "trusted_proxies",
    "header_timeout",
    "body_timeout",
    "max_connections",
    "login_concurrency",
    "login_niceness",
    "brand_name",
    "brand_logo",
    "brand_color",
    "templates_dir",
    "password_pepper",
    "grant_key",
];

/// A setting that was refused, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value could not be used.
    #[error("invalid value for `{key}`: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        message: String,
    },
    /// A `CLOAKROOM_*` variable that is no setting.
    #[error("unknown setting {0} in the environment (known: {known})", known = KEYS.iter().map(|k| format!("CLOAKROOM_{}", k.to_uppercase())).collect::<Vec<_>>().join(", "))]
    UnknownEnv(String),
    /// The file could not be read or parsed (including unknown keys).
    #[error("config file {path}: {message}")]
    File {
        /// Which file.
        path: PathBuf,
        /// Why (the TOML parser names the key and line).
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, message: message.into() }
}

/// Decodes a `grant_key`: 32 bytes, base64url without padding.
pub fn parse_grant_key(text: &str) -> Option<[u8; 32]> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// The prefix of every route: empty, or `/segment[/segment…]` without a trailing slash.
    pub base_path: String,
    /// Where `/metrics` is served instead of `listen`, if anywhere else.
    pub metrics_listen: Option<SocketAddr>,
    /// Store URL.
    pub store: String,
    /// The PostgreSQL change listener's own URL, if not the store's.
    pub store_listen: Option<String>,
    /// PEM CA bundle to trust for `rediss://`, read at start-up.
    pub store_ca: Option<Vec<u8>>,
    /// The public origin (`scheme://host[:port]`).
    pub public_origin: String,
    /// Every origin allowed on state-changing requests (the public one first).
    pub allowed_origins: Vec<String>,
    /// Origins that get CORS with credentials (a subset of `allowed_origins`).
    pub cors_origins: Vec<String>,
    /// Whether the public origin was derived from `listen` (no `public_origin` given).
    pub origin_from_listen: bool,
    /// Cookie name.
    pub cookie_name: String,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Absolute timeout.
    pub absolute_timeout: Duration,
    /// Per-user cap (0 = none).
    pub max_sessions_per_user: u32,
    /// Log format.
    pub log_format: LogFormat,
    /// Whether every request is logged (target `cloakroom::access`).
    pub access_log: bool,
    /// Trusted proxies: addresses and networks.
    pub trusted_proxies: TrustedProxies,
    /// Time allowed for a request's headers (slow clients are cut off).
    pub header_timeout: Duration,
    /// Time allowed for a request's body (slow uploads are cut off).
    pub body_timeout: Duration,
    /// Most client connections at once; 0 = derived from the open-file limit at start.
    pub max_connections: usize,
    /// Concurrent password hashes.
    pub login_concurrency: usize,
    /// Nice value of the hashing threads.
    pub login_niceness: i32,
    /// The pages' brand and templates.
    pub brand: crate::branding::Brand,
    /// Pepper bytes, if configured.
    pub password_pepper: Option<Vec<u8>>,
    /// The 32-byte key that seals grant-signing keys, if configured.
    pub grant_key: Option<[u8; 32]>,
}

impl RawConfig {
    /// Fills every unset field from `lower` (flags/env over file).
    pub fn or(self, lower: RawConfig) -> RawConfig {
        RawConfig {
            listen: self.listen.or(lower.listen),
            base_path: self.base_path.or(lower.base_path),
            metrics_listen: self.metrics_listen.or(lower.metrics_listen),
            store: self.store.or(lower.store),
            store_listen: self.store_listen.or(lower.store_listen),
            store_ca: self.store_ca.or(lower.store_ca),
            public_origin: self.public_origin.or(lower.public_origin),
            allowed_origins: self.allowed_origins.or(lower.allowed_origins),
            cors_origins: self.cors_origins.or(lower.cors_origins),
            cookie_name: self.cookie_name.or(lower.cookie_name),
            idle_timeout: self.idle_timeout.or(lower.idle_timeout),
            absolute_timeout: self.absolute_timeout.or(lower.absolute_timeout),
            max_sessions_per_user: self.max_sessions_per_user.or(lower.max_sessions_per_user),
            log_format: self.log_format.or(lower.log_format),
            access_log: self.access_log.or(lower.access_log),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            header_timeout: self.header_timeout.or(lower.header_timeout),
            body_timeout: self.body_timeout.or(lower.body_timeout),
            max_connections: self.max_connections.or(lower.max_connections),
            login_concurrency: self.login_concurrency.or(lower.login_concurrency),
            login_niceness: self.login_niceness.or(lower.login_niceness),
            brand_name: self.brand_name.or(lower.brand_name),
            brand_logo: self.brand_logo.or(lower.brand_logo),
            brand_color: self.brand_color.or(lower.brand_color),
            templates_dir: self.templates_dir.or(lower.templates_dir),
            password_pepper: self.password_pepper.or(lower.password_pepper),
            grant_key: self.grant_key.or(lower.grant_key),
        }
    }

    /// Reads a TOML file. Numbers may be given as numbers or strings.
    pub fn from_file(path: &std::path::Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::File { path: path.to_owned(), message: e.to_string() })?;
        let mut table: toml::Table = toml::from_str(&text)
            .map_err(|e| ConfigError::File { path: path.to_owned(), message: e.to_string() })?;
        // Let numbers and booleans be themselves in the file while every raw field stays text.
        for (_, value) in table.iter_mut() {
            match value {
                toml::Value::Integer(i) => *value = toml::Value::String(i.to_string()),
                toml::Value::Boolean(b) => *value = toml::Value::String(b.to_string()),
                _ => {}
            }
        }
        table.try_into().map_err(|e: toml::de::Error| ConfigError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Refuses `CLOAKROOM_*` variables that name no setting.
    pub fn check_env(vars: impl Iterator<Item = (String, String)>) -> Result<(), ConfigError> {
        for (name, _) in vars {
            let Some(key) = name.strip_prefix("CLOAKROOM_") else {
                continue;
            };
            if kubernetes_service_variable(key) {
                continue;
            }
            let key = key.to_ascii_lowercase();
            if key != "config" && !KEYS.contains(&key.as_str()) {
                return Err(ConfigError::UnknownEnv(name));
            }
        }
        Ok(())
    }

    /// Validates into a [`Config`].
    pub fn validate(self) -> Result<Config, ConfigError> {
        let listen =
            parse_listen(self.listen.as_deref().unwrap_or("127.0.0.1:7878")).ok_or_else(|| {
                invalid(
                    "listen",
                    "expected an address like 127.0.0.1:7878, [::]:7878 or localhost:7878",
                )
            })?;
        let metrics_listen = match self.metrics_listen.as_deref() {
            None => None,
            Some(text) => Some(parse_listen(text).ok_or_else(|| {
                invalid(
                    "metrics_listen",
                    "expected an address like 127.0.0.1:9187 or localhost:9187",
                )
            })?),
        };
        let base_path = match self.base_path.as_deref() {
            None => String::new(),
            Some(p) => parse_base_path(p).map_err(|m| invalid("base_path", m))?,
        };

        let store = self.store.unwrap_or_else(|| "sqlite:./cloakroom.db".into());
        let Some(backend) = crate::stores::backend_for(&store) else {
            return Err(invalid(
                "store",
                format!(
                    "unsupported store URL scheme `{}`; this build supports {}",
                    scheme_of(&store),
                    crate::stores::supported()
                ),
            ));
        };
        (backend.check)(&store).map_err(|m| invalid("store", m))?;
        let store_listen = match self.store_listen {
            None => None,
            Some(_) if !backend.listens => {
                return Err(invalid(
                    "store_listen",
                    "only a PostgreSQL store (postgres://) has a change listener to point elsewhere",
                ));
            }
            Some(url) => {
                (backend.check)(&url).map_err(|m| invalid("store_listen", m))?;
                Some(url)
            }
        };

        let store_ca = match &self.store_ca {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| invalid("store_ca", format!("cannot read {path}: {e}")))?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(invalid("store_ca", format!("{path} holds no PEM certificate")));
                }
                Some(pem)
            }
        };
        let origin_given = self.public_origin.is_some();
        let public_origin = match self.public_origin {
            Some(o) => parse_origin(&o).map_err(|m| invalid("public_origin", m))?,
            None if listen.ip().is_loopback() => format!("http://{listen}"),
            None => {
                return Err(invalid(
                    "public_origin",
                    "required when listening on a non-loopback address (e.g. https://app.example.com)",
                ));
            }
        };
        let mut allowed_origins = vec![public_origin.clone()];
        if !origin_given {
            // The default loopback origin also answers to its `localhost` name.
            allowed_origins.push(format!("http://localhost:{}", listen.port()));
        }
        let origins = |key: &'static str, list: Option<Vec<String>>| {
            list.unwrap_or_default()
                .iter()
                .map(|o| parse_origin(o.trim()).map_err(|m| invalid(key, m)))
                .collect::<Result<Vec<_>, _>>()
        };
        let cors_origins = origins("cors_origins", self.cors_origins)?;
        // A CORS origin is also an allowed one (an SPA writes with the token it reads).
        for o in origins("allowed_origins", self.allowed_origins)?
            .into_iter()
            .chain(cors_origins.clone())
        {
            if !allowed_origins.contains(&o) {
                allowed_origins.push(o);
            }
        }

        let cookie_name = self.cookie_name.unwrap_or_else(|| "__Host-cloakroom".into());
        if !cookie_name.starts_with("__Host-") {
            return Err(invalid(
                "cookie_name",
                "must start with __Host- (binds the cookie to this host, Secure, Path=/)",
            ));
        }
        if cookie_name.len() > 64
            || !cookie_name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(invalid("cookie_name", "at most 64 characters from A-Z a-z 0-9 - _ ."));
        }

        let idle_timeout = duration("idle_timeout", self.idle_timeout.as_deref(), "30m")?;
        let absolute_timeout =
            duration("absolute_timeout", self.absolute_timeout.as_deref(), "12h")?;
        if idle_timeout < Duration::from_secs(60) {
            return Err(invalid("idle_timeout", "must be at least 1m"));
        }
        if absolute_timeout < idle_timeout {
            return Err(invalid("absolute_timeout", "must be at least idle_timeout"));
        }
        if absolute_timeout > cloakroom_core::session::MAX_LIFETIME {
            return Err(invalid("absolute_timeout", "must be at most 30 days"));
        }

        let max_sessions_per_user = match self.max_sessions_per_user.as_deref() {
            // A cap by default: what one user can pile up (sessions, and the work each login,
            // listing and revoke-all does over them) stays bounded. 0 turns it off.
            None => DEFAULT_MAX_SESSIONS_PER_USER,
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| invalid("max_sessions_per_user", "expected a whole number"))?,
        };
        let access_log = match self.access_log.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("false" | "off" | "no" | "0") => false,
            Some("true" | "on" | "yes" | "1") => true,
            Some(other) => {
                return Err(invalid("access_log", format!("`{other}`: expected true or false")));
            }
        };
        let log_format = match self.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid("log_format", format!("`{other}`: expected text or json")));
            }
        };
        let trusted_proxies = TrustedProxies::parse(&self.trusted_proxies.unwrap_or_default())
            .map_err(|e| invalid("trusted_proxies", e))?;
        let header_timeout = duration("header_timeout", self.header_timeout.as_deref(), "10s")?;
        if header_timeout.is_zero() || header_timeout > Duration::from_secs(300) {
            return Err(invalid("header_timeout", "must be between 1s and 5m"));
        }
        let body_timeout = duration("body_timeout", self.body_timeout.as_deref(), "10s")?;
        if body_timeout.is_zero() || body_timeout > Duration::from_secs(300) {
            return Err(invalid("body_timeout", "must be between 1s and 5m"));
        }
        let max_connections = match self.max_connections.as_deref().map(str::trim) {
            None => 0,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n == 0 || (16..=1_000_000).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        "max_connections",
                        "expected 0 (from the open-file limit) or a number from 16 to 1000000",
                    ));
                }
            },
        };
        let login_concurrency = match self.login_concurrency.as_deref() {
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=256).contains(&n) => n,
                _ => {
                    return Err(invalid("login_concurrency", "expected a number from 1 to 256"));
                }
            },
        };
        let login_niceness = match self.login_niceness.as_deref().map(str::trim) {
            None => cloakroom_core::password::DEFAULT_NICENESS,
            Some(v) => match v.parse::<i32>() {
                Ok(n) if (0..=19).contains(&n) => n,
                _ => return Err(invalid("login_niceness", "expected a number from 0 to 19")),
            },
        };
        let brand = crate::branding::Brand::load(
            self.brand_name.as_deref(),
            self.brand_color.as_deref(),
            self.brand_logo.as_deref(),
            self.templates_dir.as_deref(),
        )
        .map_err(|(key, message)| invalid(key, message))?;
        let password_pepper = match self.password_pepper {
            None => None,
            Some(p) if p.len() >= 16 => Some(p.into_bytes()),
            Some(_) => return Err(invalid("password_pepper", "must be at least 16 bytes")),
        };
        let grant_key = match self.grant_key {
            None => None,
            Some(k) => Some(parse_grant_key(&k).ok_or_else(|| {
                invalid("grant_key", "expected 32 bytes as base64url (43 characters)")
            })?),
        };

        Ok(Config {
            listen,
            base_path,
            metrics_listen,
            store,
            store_listen,
            store_ca,
            public_origin,
            allowed_origins,
            cors_origins,
            origin_from_listen: !origin_given,
            cookie_name,
            idle_timeout,
            absolute_timeout,
            max_sessions_per_user,
            log_format,
            access_log,
            trusted_proxies,
            header_timeout,
            body_timeout,
            max_connections,
            login_concurrency,
            login_niceness,
            brand,
            password_pepper,
            grant_key,
        })
    }
}

impl Config {
    /// The origins that are Cloakroom's own (and the proxy's in front of it): `public_origin`,
    /// and its `localhost` twin when derived from a loopback `listen`. Not `allowed_origins`.
    pub fn own_origins(&self) -> &[String] {
        let own = if self.origin_from_listen { 2 } else { 1 };
        &self.allowed_origins[..own.min(self.allowed_origins.len())]
    }

    /// Records the address actually bound (port 0 picks one): a public origin derived from
    /// `listen` follows it.
    pub fn bound_to(&mut self, addr: SocketAddr) {
        self.listen = addr;
        if self.origin_from_listen {
            let derived = [format!("http://{addr}"), format!("http://localhost:{}", addr.port())];
            self.allowed_origins.splice(0..2.min(self.allowed_origins.len()), derived);
            self.public_origin = self.allowed_origins[0].clone();
        }
    }
}

/// The variables Kubernetes injects for a Service named `cloakroom` (given without the
/// `CLOAKROOM_` prefix): `PORT`, `PORT_*`, `SERVICE_HOST`, `SERVICE_PORT*`.
fn kubernetes_service_variable(name: &str) -> bool {
    name == "PORT"
        || name.starts_with("PORT_")
        || name == "SERVICE_HOST"
        || name.starts_with("SERVICE_PORT")
}

/// `IP:PORT`, `[IPv6]:PORT`, or `localhost:PORT` (the IPv4 loopback: no name lookup).
fn parse_listen(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse() {
        return Some(addr);
    }
    let port = text.strip_prefix("localhost:")?.parse::<u16>().ok()?;
    Some(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A route prefix: `/` plus segments of unreserved characters, without a trailing slash (one
/// is dropped); `/` alone and the empty string mean none.
fn parse_base_path(text: &str) -> Result<String, String> {
    let trimmed = text.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let Some(rest) = trimmed.strip_prefix('/') else {
        return Err(format!("`{text}` must start with / (e.g. /auth)"));
    };
    for segment in rest.split('/') {
        let ok = !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        if !ok {
            return Err(format!(
                "`{text}`: each segment must be letters, digits, `-`, `.`, `_` or `~` (e.g. /auth)"
            ));
        }
    }
    Ok(trimmed.to_owned())
}

fn scheme_of(url: &str) -> &str {
    url.split_once(':').map_or(url, |(s, _)| s)
}

fn duration(
    key: &'static str,
    value: Option<&str>,
    default: &str,
) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.unwrap_or(default).trim())
        .map_err(|e| invalid(key, format!("{e} (expected a duration like 30m or 12h)")))
}

/// Normalizes an origin `scheme://host[:port]`; refuses paths, plain HTTP off loopback, and junk.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| format!("`{text}` is not an origin like https://app.example.com"))?;
    let scheme = scheme.to_ascii_lowercase();
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!("`{text}` must be scheme://host[:port] with no path"));
    }
    let host = rest.to_ascii_lowercase();
    let bare_host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default().to_owned(),
        None => host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h).to_owned(),
    };
    let loopback =
        bare_host == "localhost" || bare_host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match scheme.as_str() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "`{text}` is plain HTTP: session cookies are Secure, so the public origin must be https (plain http only on localhost)"
            ));
        }
        _ => return Err(format!("`{text}`: the scheme must be https")),
    }
    Ok(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_asvs_level_2() {
        let c = RawConfig::default().validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7878");
        assert_eq!(c.store, "sqlite:./cloakroom.db");
        assert_eq!(c.cookie_name, "__Host-cloakroom");
        assert_eq!(c.idle_timeout, Duration::from_secs(1800));
        assert_eq!(c.absolute_timeout, Duration::from_secs(12 * 3600));
        assert_eq!(c.allowed_origins, ["http://127.0.0.1:7878", "http://localhost:7878"]);
        assert_eq!(c.max_sessions_per_user, 100);
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases: &[(RawConfig, &str)] = &[
            (RawConfig { idle_timeout: Some("soon".into()), ..Default::default() }, "idle_timeout"),
            (RawConfig { listen: Some("nowhere".into()), ..Default::default() }, "listen"),
            (RawConfig { log_format: Some("xml".into()), ..Default::default() }, "log_format"),
            (RawConfig { access_log: Some("maybe".into()), ..Default::default() }, "access_log"),
            (RawConfig { cookie_name: Some("sid".into()), ..Default::default() }, "cookie_name"),
            (
                RawConfig {
                    public_origin: Some("http://app.example.com".into()),
                    ..Default::default()
                },
                "public_origin",
            ),
            (
                RawConfig { max_sessions_per_user: Some("-1".into()), ..Default::default() },
                "max_sessions_per_user",
            ),
            (RawConfig { store: Some("mysql://x".into()), ..Default::default() }, "store"),
            (
                RawConfig {
                    idle_timeout: Some("2h".into()),
                    absolute_timeout: Some("1h".into()),
                    ..Default::default()
                },
                "absolute_timeout",
            ),
            (
                RawConfig { listen: Some("0.0.0.0:7878".into()), ..Default::default() },
                "public_origin",
            ),
        ];
        for (raw, key) in cases {
            let err = raw.clone().validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{err} should name {key}");
        }
    }

    #[test]
    fn precedence_is_flag_then_env_then_file() {
        let flags_env = RawConfig { idle_timeout: Some("10m".into()), ..Default::default() };
        let file = RawConfig {
            idle_timeout: Some("20m".into()),
            log_format: Some("json".into()),
            ..Default::default()
        };
        let c = flags_env.or(file).validate().unwrap();
        assert_eq!(c.idle_timeout, Duration::from_secs(600));
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn file_refuses_unknown_keys_and_accepts_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "max_sessions_per_user = 3\nidle_timeout = \"15m\"\naccess_log = true\n",
        )
        .unwrap();
        let c = RawConfig::from_file(&path).unwrap().validate().unwrap();
        assert_eq!(c.max_sessions_per_user, 3);
        assert!(c.access_log);
        std::fs::write(&path, "idle_timeout = \"15m\"\nidle_timout = \"1m\"\n").unwrap();
        let err = RawConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("idle_timout"), "{err}");
    }

    #[test]
    fn unknown_env_is_refused() {
        let ok = [("CLOAKROOM_LISTEN".to_owned(), String::new()), ("PATH".into(), String::new())];
        assert!(RawConfig::check_env(ok.into_iter()).is_ok());
        let bad = [("CLOAKROOM_IDLE_TIMOUT".to_owned(), String::new())];
        assert!(
            RawConfig::check_env(bad.into_iter())
                .unwrap_err()
                .to_string()
                .contains("CLOAKROOM_IDLE_TIMOUT")
        );
    }

    #[test]
    fn kubernetes_service_variables_are_ignored_and_near_misses_are_not() {
        let injected = [
            "CLOAKROOM_PORT",
            "CLOAKROOM_PORT_7878_TCP",
            "CLOAKROOM_PORT_7878_TCP_ADDR",
            "CLOAKROOM_PORT_7878_TCP_PORT",
            "CLOAKROOM_PORT_7878_TCP_PROTO",
            "CLOAKROOM_SERVICE_HOST",
            "CLOAKROOM_SERVICE_PORT",
            "CLOAKROOM_SERVICE_PORT_HTTP",
        ];
        let vars = injected.iter().map(|n| ((*n).to_owned(), "10.0.0.1".to_owned()));
        assert!(RawConfig::check_env(vars).is_ok());
        for typo in ["CLOAKROOM_PORTS", "CLOAKROOM_SERVICE", "CLOAKROOM_SERVICE_HOSTNAME"] {
            let vars = [(typo.to_owned(), String::new())];
            assert!(RawConfig::check_env(vars.into_iter()).is_err(), "{typo} is refused");
        }
    }

    #[test]
    fn listen_takes_localhost() {
        let c = RawConfig { listen: Some("localhost:7979".into()), ..Default::default() };
        assert_eq!(c.validate().unwrap().listen.to_string(), "127.0.0.1:7979");
        for bad in ["localhost", "localhost:x", "example.com:80", "localhost:70000"] {
            let c = RawConfig { listen: Some(bad.into()), ..Default::default() };
            assert!(c.validate().unwrap_err().to_string().contains("`listen`"), "{bad}");
        }
    }

    #[test]
    fn base_path_is_a_clean_prefix() {
        let base =
            |p: &str| RawConfig { base_path: Some(p.into()), ..Default::default() }.validate();
        assert_eq!(RawConfig::default().validate().unwrap().base_path, "");
        for (given, kept) in
            [("/auth", "/auth"), ("/auth/", "/auth"), ("/", ""), ("/a/b-c_1", "/a/b-c_1")]
        {
            assert_eq!(base(given).unwrap().base_path, kept, "{given}");
        }
        for bad in ["auth", "/a//b", "/a/../b", "/a b", "/a?x", "/a#b", "/%2e%2e", "/ä"] {
            assert!(base(bad).unwrap_err().to_string().contains("`base_path`"), "{bad}");
        }
    }

    #[test]
    fn postgres_stores_and_their_listener_url() {
        for url in ["postgres://cr@db.internal/cloakroom", "postgresql://cr@db.internal:6432/cr"] {
            let c = RawConfig { store: Some(url.into()), ..Default::default() }.validate().unwrap();
            assert_eq!(c.store, url);
            assert_eq!(c.store_listen, None);
        }
        let c = RawConfig {
            store: Some("postgres://cr@pgbouncer:6432/cr?max_connections=20".into()),
            store_listen: Some("postgres://cr@db.internal:5432/cr".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(c.store_listen.as_deref(), Some("postgres://cr@db.internal:5432/cr"));

        let refused: &[(RawConfig, &str, &str)] = &[
            (
                RawConfig {
                    store: Some("sqlite:./x.db".into()),
                    store_listen: Some("postgres://cr@db/cr".into()),
                    ..Default::default()
                },
                "store_listen",
                "only a PostgreSQL store",
            ),
            (
                RawConfig {
                    store: Some("postgres://cr@db/cr".into()),
                    store_listen: Some("redis://db:6379".into()),
                    ..Default::default()
                },
                "store_listen",
                "postgres://",
            ),
            (
                RawConfig {
                    store: Some("postgres://cr:pw@db/cr?max_connections=0".into()),
                    ..Default::default()
                },
                "store",
                "max_connections",
            ),
        ];
        for (raw, key, says) in refused {
            let err = raw.clone().validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")) && err.contains(says), "{err}");
            assert!(!err.contains("pw@"), "no password in the message: {err}");
        }
        let env = [("CLOAKROOM_STORE_LISTEN".to_owned(), String::new())];
        assert!(RawConfig::check_env(env.into_iter()).is_ok());
    }

    #[test]
    fn store_listen_is_a_file_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "store = \"postgres://cr@pgbouncer/cr\"\nstore_listen = \"postgres://cr@db/cr\"\n",
        )
        .unwrap();
        let c = RawConfig::from_file(&path).unwrap().validate().unwrap();
        assert_eq!(c.store_listen.as_deref(), Some("postgres://cr@db/cr"));
    }

    #[test]
    fn store_ca_must_be_a_readable_pem_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing =
            RawConfig { store_ca: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        assert!(missing.validate().unwrap_err().to_string().contains("`store_ca`"));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let junk =
            RawConfig { store_ca: Some(junk.to_str().unwrap().into()), ..Default::default() };
        assert!(junk.validate().unwrap_err().to_string().contains("no PEM certificate"));
    }

    #[test]
    fn a_derived_origin_follows_the_bound_port() {
        let mut c = RawConfig { listen: Some("127.0.0.1:0".into()), ..Default::default() }
            .validate()
            .unwrap();
        c.bound_to("127.0.0.1:41234".parse().unwrap());
        assert_eq!(c.public_origin, "http://127.0.0.1:41234");
        assert_eq!(c.allowed_origins, ["http://127.0.0.1:41234", "http://localhost:41234"]);
        let given = RawConfig {
            listen: Some("127.0.0.1:0".into()),
            public_origin: Some("https://app.example.com".into()),
            ..Default::default()
        };
        let mut c = given.validate().unwrap();
        c.bound_to("127.0.0.1:41234".parse().unwrap());
        assert_eq!(c.allowed_origins, ["https://app.example.com"]);
    }

    #[test]
    fn origins_are_normalized() {
        assert_eq!(parse_origin("HTTPS://App.Example.com/").unwrap(), "https://app.example.com");
        assert_eq!(parse_origin("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        assert!(parse_origin("https://app.example.com/path").is_err());
        assert!(parse_origin("ftp://x").is_err());
    }
}
