//! The Cloakroom server: the axum application (HTTP API, forward-auth, service API), its
//! configuration and the `cloakroom` command line.
//!
//! - [`config`]: raw settings to a validated [`config::Config`].
//! - [`app`]: the router; [`routes`]: one module per resource; [`extract`]: who calls and with what;
//!   [`error`]: the one place that picks HTTP statuses.
//! - [`serve`]: running the server; [`cli`]: the command line.

pub mod app;
pub mod branding;
pub mod cli;
pub mod config;
pub mod copy;
pub mod cors;
pub mod error;
pub mod extract;
pub mod grants;
pub mod limits;
pub mod metered;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod routes;
pub mod serve;
pub mod state;
pub mod stores;

pub use cloakroom_service::throttle;

pub use app::app;
