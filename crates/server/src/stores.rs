//! The stores this build can open: one table from URL scheme to backend, used by the
//! configuration (to validate a URL at start-up) and by [`crate::serve::open_store_with`] (to
//! open it). Each backend is a cargo feature of this crate (`sqlite`, `redis`, `postgres`; all on
//! by default): a build without one names only the others in its errors.

use std::sync::Arc;

use cloakroom_core::Store;

/// Where and how to open a store (owned: opening happens once, at start-up).
#[derive(Clone, Debug)]
pub struct Target {
    /// The store URL.
    pub url: String,
    /// A PEM CA bundle to trust for TLS (`store_ca`).
    pub ca_pem: Option<Vec<u8>>,
    /// A separate URL for the change listener (`store_listen`; PostgreSQL only).
    pub listen: Option<String>,
    /// Whether a missing embedded store may be created.
    pub create: bool,
}

/// Which backend, for [`open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `sqlite:`
    #[cfg(feature = "sqlite")]
    Sqlite,
    /// `redis://` and its variants
    #[cfg(feature = "redis")]
    Redis,
    /// `postgres://`, `postgresql://`
    #[cfg(feature = "postgres")]
    Postgres,
}

/// One backend: the URL prefixes it answers to and what it does with them.
pub struct Backend {
    /// Its name in logs and metrics.
    pub name: &'static str,
    /// URL prefixes (schemes) it opens.
    pub schemes: &'static [&'static str],
    /// Whether it has a change listener that `store_listen` may point elsewhere.
    pub listens: bool,
    /// Checks a URL's settings at start-up (before anything connects).
    pub check: fn(&str) -> Result<(), String>,
    /// The URL for logs and errors, without credentials.
    pub redact: fn(&str) -> String,
    /// The file the store lives in, when it is one on this machine (a grant key file goes
    /// beside it).
    pub local_file: fn(&str) -> Option<String>,
    /// The database file itself, when the store is one on this machine (`file:` URIs resolved).
    pub db_file: fn(&str) -> Option<String>,
    /// Which one, to open it.
    pub kind: Kind,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Every backend in this build, in the order the documentation lists them.
pub const BACKENDS: &[Backend] = &[
    #[cfg(feature = "sqlite")]
    sqlite::BACKEND,
    #[cfg(feature = "redis")]
    redis::BACKEND,
    #[cfg(feature = "postgres")]
    postgres::BACKEND,
];

/// The backend for `url`, if this build has one.
pub fn backend_for(url: &str) -> Option<&'static Backend> {
    BACKENDS.iter().find(|b| b.schemes.iter().any(|s| url.starts_with(s)))
}

/// The schemes this build opens, for an error message: `sqlite:PATH, redis://, …`.
pub fn supported() -> String {
    BACKENDS
        .iter()
        .flat_map(|b| b.schemes.iter())
        .map(|s| if *s == "sqlite:" { "sqlite:PATH" } else { s })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Opens the store `target` names with `backend`.
pub async fn open(backend: &Backend, target: Target) -> anyhow::Result<Arc<dyn Store>> {
    match backend.kind {
        #[cfg(feature = "sqlite")]
        Kind::Sqlite => sqlite::open(target).await,
        #[cfg(feature = "redis")]
        Kind::Redis => redis::open(target).await,
        #[cfg(feature = "postgres")]
        Kind::Postgres => postgres::open(target).await,
    }
}

/// A URL without the credentials in its user-info part, whatever its scheme.
pub fn redact(url: &str) -> String {
    match backend_for(url) {
        Some(b) => (b.redact)(url),
        None => match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                format!("{}<credentials>{}", &url[..s + 3], &url[at..])
            }
            _ => url.to_owned(),
        },
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use anyhow::Context as _;

    pub(super) const BACKEND: Backend = Backend {
        name: "sqlite",
        schemes: &["sqlite:"],
        listens: false,
        check: |_| Ok(()),
        redact: |url| url.to_owned(),
        local_file: |url| {
            cloakroom_store_sqlite::name_of_url(url)
                .filter(|p| !p.is_empty() && !p.starts_with(':'))
                .map(str::to_owned)
        },
        db_file: |url| {
            cloakroom_store_sqlite::name_of_url(url)
                .and_then(cloakroom_store_sqlite::file_of)
                .map(str::to_owned)
        },
        kind: Kind::Sqlite,
    };

    pub(super) async fn open(t: Target) -> anyhow::Result<Arc<dyn Store>> {
        let file = cloakroom_store_sqlite::name_of_url(&t.url)
            .and_then(cloakroom_store_sqlite::file_of)
            .map(std::path::PathBuf::from);
        if let Some(path) = file.filter(|p| !t.create && !p.exists()) {
            anyhow::bail!(
                "no store at {}: start `cloakroom serve` with this store first, name the right \
                 one with --store (or CLOAKROOM_STORE), or pass --create to make a new one",
                path.display()
            );
        }
        let store = cloakroom_store_sqlite::SqliteStore::connect(&t.url)
            .await
            .with_context(|| format!("opening the store {}", t.url))?;
        Ok(Arc::new(store))
    }
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use anyhow::Context as _;

    pub(super) const BACKEND: Backend = Backend {
        name: "redis",
        schemes: &["redis://", "rediss://", "redis+cluster://", "redis+sentinel://"],
        listens: false,
        check: cloakroom_store_redis::check_url,
        redact: cloakroom_store_redis::redact,
        local_file: |_| None,
        db_file: |_| None,
        kind: Kind::Redis,
    };

    pub(super) async fn open(t: Target) -> anyhow::Result<Arc<dyn Store>> {
        let store = cloakroom_store_redis::RedisStore::connect_with_ca(&t.url, t.ca_pem.as_deref())
            .await
            .with_context(|| {
                format!("connecting to the store {}", cloakroom_store_redis::redact(&t.url))
            })?;
        Ok(Arc::new(store))
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use anyhow::Context as _;

    pub(super) const BACKEND: Backend = Backend {
        name: "postgres",
        schemes: &["postgres://", "postgresql://"],
        listens: true,
        check: |url| cloakroom_store_postgres::Settings::parse(url).map(|_| ()),
        redact: cloakroom_store_postgres::redact,
        local_file: |_| None,
        db_file: |_| None,
        kind: Kind::Postgres,
    };

    pub(super) async fn open(t: Target) -> anyhow::Result<Arc<dyn Store>> {
        let store = cloakroom_store_postgres::PgStore::connect_with(
            &t.url,
            t.listen.as_deref(),
            t.ca_pem.as_deref(),
        )
        .await
        .with_context(|| {
            format!("connecting to the store {}", cloakroom_store_postgres::redact(&t.url))
        })?;
        Ok(Arc::new(store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_has_one_backend() {
        for b in BACKENDS {
            for s in b.schemes {
                let owners: Vec<_> = BACKENDS
                    .iter()
                    .filter(|o| o.schemes.iter().any(|x| s.starts_with(x)))
                    .collect();
                assert_eq!(owners.len(), 1, "{s}");
            }
        }
        assert!(backend_for("mysql://db/x").is_none());
        assert_eq!(redact("mysql://u:secret@db/x"), "mysql://<credentials>@db/x");
    }
}
