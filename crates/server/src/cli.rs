//! The `cloakroom` command line. Every command takes the same configuration as `serve`
//! (`--store`, `--config`, `CLOAKROOM_*`), works beside a running server on the same store,
//! prints a table (or JSON with `--json`), and exits 0 on success, 1 on failure, 2 on a usage
//! error. Passwords come from a terminal prompt or `--password-stdin`, never from an argument.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use cloakroom_core::audit::AuditFilter;
use cloakroom_core::password::{Cost, Password};
use cloakroom_core::{SessionId, Timestamp, Username};
use cloakroom_service::{Actor, Client, DomainError, Service};
use serde_json::json;

use crate::config::{Config, LogFormat, RawConfig};

mod output;
mod store;

use output::{Output, closed_pipe, say_err, table};

/// Cloakroom: server-side sessions that are secure by default and revocable at once.
#[derive(Debug, Parser)]
#[command(name = "cloakroom", version, about)]
pub struct Cli {
    /// TOML configuration file
    #[arg(long = "config", env = "CLOAKROOM_CONFIG", global = true)]
    config_file: Option<PathBuf>,
    /// Print JSON instead of tables
    #[arg(long, global = true)]
    json: bool,
    /// Create the embedded store when its file is missing (only `serve` does so on its own)
    #[arg(long, global = true)]
    create: bool,
    #[command(flatten)]
    settings: RawConfig,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server
    Serve,
    /// Manage users
    #[command(subcommand)]
    User(UserCmd),
    /// List and revoke sessions
    #[command(subcommand)]
    Session(SessionCmd),
    /// Manage service API keys
    #[command(subcommand)]
    Apikey(ApikeyCmd),
    /// Manage grant-signing keys
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Move between stores
    #[command(subcommand)]
    Store(store::StoreCmd),
    /// Show audit events, newest first
    Audit {
        /// Only this user's events
        #[arg(long)]
        user: Option<String>,
        /// How many events at most
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Debug, Args)]
struct PasswordInput {
    /// Read the password from the first line of standard input
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Create a user
    Add {
        /// Username
        name: String,
        /// A role (repeatable)
        #[arg(long = "role")]
        roles: Vec<String>,
        #[command(flatten)]
        password: PasswordInput,
        /// Create the user without a password (for apps that check credentials themselves)
        #[arg(long, conflicts_with = "password_stdin")]
        no_password: bool,
    },
    /// Set a user's password; revokes all of the user's sessions
    Passwd {
        /// Username
        name: String,
        #[command(flatten)]
        password: PasswordInput,
    },
    /// Add or remove roles
    Role {
        /// Username
        name: String,
        /// Role to add (repeatable)
        #[arg(long = "add")]
        add: Vec<String>,
        /// Role to remove (repeatable)
        #[arg(long = "remove")]
        remove: Vec<String>,
    },
    /// Disable a user and revoke all of the user's sessions
    Disable {
        /// Username
        name: String,
    },
    /// Enable a disabled user
    Enable {
        /// Username
        name: String,
    },
    /// List users
    List,
}

#[derive(Debug, Subcommand)]
enum SessionCmd {
    /// List live sessions
    List {
        /// Only this user's
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke one session by id, all of a user's, or all
    Revoke {
        /// Session id (ses_…)
        #[arg(required_unless_present_any = ["user", "all"], conflicts_with_all = ["user", "all"])]
        id: Option<String>,
        /// Revoke all of this user's sessions
        #[arg(long, conflicts_with = "all")]
        user: Option<String>,
        /// Revoke every session of every user
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ApikeyCmd {
    /// Create a key; it is printed once and stored hashed
    Create {
        /// Key name
        name: String,
    },
    /// List keys (names only)
    List,
    /// Revoke a key
    Revoke {
        /// Key name
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// New grant-signing key; the old one verifies until its grants expire
    Rotate,
    /// List grant-signing keys
    List,
    /// Print a fresh random grant_key (the key that seals signing keys) for the configuration
    Secret,
}

/// Parses arguments and runs; the process's exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            say_err(&format!("cloakroom: {e:#}"));
            return ExitCode::from(2);
        }
    };
    init_logging(&config, matches!(cli.command, Command::Serve));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            say_err(&format!("cloakroom: cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, config)) {
        Ok(()) => ExitCode::SUCCESS,
        // `| head -1` went away: what it wanted was printed, nothing failed.
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            say_err(&format!("cloakroom: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    RawConfig::check_env(std::env::vars())?;
    let file = match &cli.config_file {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    // The pepper and the grant key are secrets: environment or file only, never a flag.
    let env_pepper = RawConfig {
        password_pepper: std::env::var("CLOAKROOM_PASSWORD_PEPPER").ok(),
        grant_key: std::env::var("CLOAKROOM_GRANT_KEY").ok(),
        ..Default::default()
    };
    Ok(cli.settings.clone().or(env_pepper).or(file).validate()?)
}

fn init_logging(config: &Config, serving: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if serving { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a person at a terminal: log files and journald get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    if let Command::Serve = cli.command {
        return crate::serve::run(config).await;
    }
    if let Command::Keys(KeysCmd::Secret) = cli.command {
        // Needs no store: a fresh key for CLOAKROOM_GRANT_KEY.
        use base64::Engine as _;
        let key = cloakroom_grant::SymmetricKey::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
        let out = Output { json: cli.json };
        out.line(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes()))?;
        return Ok(());
    }
    if let Command::Store(cmd) = cli.command {
        // Names its two stores itself: the configured one is not opened.
        return store::run(cmd, &config, &Output { json: cli.json }).await;
    }
    let open = crate::serve::Open { create: cli.create };
    let store = crate::serve::open_store(&config.store, config.store_ca.as_deref(), open).await?;
    let manager = crate::serve::manager(Arc::clone(&store), &config, Cost::ASVS);
    // Only the key commands need the grant-signing keys (and a grant_key that opens them).
    let issuer = match &cli.command {
        Command::Keys(_) => Some(
            crate::grants::grants(&store, &config)?
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "grants are off: set grant_key (CLOAKROOM_GRANT_KEY) for this store"
                    )
                })?
                .issuer
                .clone(),
        ),
        _ => None,
    };
    let throttle = crate::throttle::Throttle::new(store, crate::throttle::Limits::default());
    let service = Service::new(manager, throttle, issuer);
    let out = Output { json: cli.json };
    match cli.command {
        Command::Serve | Command::Store(_) => unreachable_serve(),
        Command::User(cmd) => user(&service, &out, cmd).await,
        Command::Session(cmd) => session(&service, &out, cmd).await,
        Command::Apikey(cmd) => apikey(&service, &out, cmd).await,
        Command::Keys(cmd) => keys(&service, &out, cmd).await,
        Command::Audit { user, limit } => {
            let username = user.as_deref().map(parse_username).transpose()?;
            out.audit(&service.audit_log(&Actor::Cli, &AuditFilter { username, limit }).await?)?;
            Ok(())
        }
    }
}

fn unreachable_serve() -> anyhow::Result<()> {
    bail!("serve and store are handled before the store is opened")
}

fn parse_username(s: &str) -> anyhow::Result<Username> {
    Username::parse(s).map_err(|e| anyhow::anyhow!("invalid username `{s}`: {e}"))
}

/// Reads a new password from stdin (`--password-stdin`) or a terminal prompt (asked twice).
fn read_password(input: &PasswordInput) -> anyhow::Result<String> {
    let text = if input.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
        line.strip_suffix('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .unwrap_or(&line)
            .to_owned()
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password: ").context("reading the password")?;
        let second = rpassword::prompt_password("Repeat it: ").context("reading the password")?;
        if first != second {
            bail!("the passwords do not match");
        }
        first
    } else {
        bail!(
            "no terminal to ask for a password: pass --password-stdin and write it to standard input"
        );
    };
    Password::new(text.clone()).check_policy()?;
    Ok(text)
}

async fn user(service: &Service, out: &Output, cmd: UserCmd) -> anyhow::Result<()> {
    let cli = &Actor::Cli;
    match cmd {
        UserCmd::Add { name, roles, password, no_password } => {
            let password = if no_password { None } else { Some(read_password(&password)?) };
            let user =
                service.create_user(cli, &name, password, &roles).await.map_err(|e| match e {
                    DomainError::Conflict(_) => anyhow::anyhow!("that user already exists"),
                    other => other.into(),
                })?;
            out.users(&[user])?;
        }
        UserCmd::Passwd { name, password } => {
            service.user(&name).await.map_err(no_user(&name))?;
            let password = read_password(&password)?;
            let (user, revoked) = service.set_password(cli, &name, password).await?;
            out.message(
                &format!("password changed; {revoked} session(s) revoked"),
                json!({ "user": user, "revoked": revoked }),
            )?;
        }
        UserCmd::Role { name, add, remove } => {
            let user =
                service.change_roles(cli, &name, &add, &remove).await.map_err(no_user(&name))?;
            out.users(&[user])?;
        }
        UserCmd::Disable { name } => {
            let (user, revoked) =
                service.set_disabled(cli, &name, true).await.map_err(no_user(&name))?;
            out.message(
                &format!("{} disabled; {revoked} session(s) revoked", user.username),
                json!({ "user": user, "revoked": revoked }),
            )?;
        }
        UserCmd::Enable { name } => {
            let (user, _) =
                service.set_disabled(cli, &name, false).await.map_err(no_user(&name))?;
            out.users(&[user])?;
        }
        UserCmd::List => out.users(&service.users(cli).await?)?,
    }
    Ok(())
}

/// "no user named NAME" for a use case's not-found user; other errors as they are.
fn no_user(name: &str) -> impl Fn(DomainError) -> anyhow::Error + '_ {
    move |e| match e {
        DomainError::NotFound("user") => match parse_username(name) {
            Ok(n) => anyhow::anyhow!("no user named {n}"),
            Err(e) => e,
        },
        other => other.into(),
    }
}

async fn session(service: &Service, out: &Output, cmd: SessionCmd) -> anyhow::Result<()> {
    let cli = &Actor::Cli;
    match cmd {
        SessionCmd::List { user } => {
            let name = user.as_deref();
            let sessions = service.list_sessions(cli, name).await.map_err(|e| match name {
                Some(n) => no_user(n)(e),
                None => e.into(),
            })?;
            out.sessions(&sessions)?;
        }
        SessionCmd::Revoke { id: Some(id), .. } => {
            if SessionId::parse(&id).is_none() {
                bail!("`{id}` is not a session id (ses_…)");
            }
            service.revoke_session(cli, &id, &Client::default()).await.map_err(|e| match e {
                DomainError::NotFound(_) => anyhow::anyhow!("no session {id}"),
                other => other.into(),
            })?;
            out.message(&format!("revoked {id}"), json!({ "revoked": 1 }))?;
        }
        SessionCmd::Revoke { user: Some(name), .. } => {
            let revoked = service
                .revoke_user_sessions(cli, &name, &Client::default())
                .await
                .map_err(no_user(&name))?;
            let username = parse_username(&name)?;
            out.message(
                &format!("revoked {revoked} session(s) of {username}"),
                json!({ "revoked": revoked }),
            )?;
        }
        SessionCmd::Revoke { all: true, .. } => {
            let total = service.revoke_everyone(cli).await?;
            out.message(&format!("revoked {total} session(s)"), json!({ "revoked": total }))?;
        }
        SessionCmd::Revoke { .. } => bail!("name a session id, --user NAME or --all"),
    }
    Ok(())
}

async fn keys(service: &Service, out: &Output, cmd: KeysCmd) -> anyhow::Result<()> {
    let cli = &Actor::Cli;
    let now = Timestamp::now();
    match cmd {
        KeysCmd::Rotate => {
            let key = service.rotate_signing_key(cli).await?;
            out.message(
                &format!(
                    "new grant-signing key {} signs from {}; the previous keys verify until their grants expire",
                    key.id, key.active_from
                ),
                json!({ "id": key.id, "paserk": key.public, "active_from": key.active_from }),
            )?;
        }
        KeysCmd::List => {
            let keys = service.signing_keys(cli).await?;
            if out.json {
                let keys: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        json!({ "id": k.id, "paserk": k.public, "created_at": k.created_at,
                        "active_from": k.active_from, "retired_at": k.retired_at,
                        "signing": k.signs_at(now), "published": k.published_at(now) })
                    })
                    .collect();
                out.line(&json!({ "keys": keys }).to_string())?;
            } else {
                let state = |k: &cloakroom_core::grant::SigningKeyRecord| {
                    if k.signs_at(now) {
                        "signing"
                    } else if k.active_from > now {
                        "next"
                    } else if k.published_at(now) {
                        "verifying"
                    } else {
                        "expired"
                    }
                };
                table(
                    &["ID", "STATE", "CREATED", "RETIRED"],
                    keys.iter()
                        .map(|k| {
                            vec![
                                k.id.clone(),
                                state(k).to_owned(),
                                k.created_at.to_string(),
                                k.retired_at.map(|t| t.to_string()).unwrap_or_default(),
                            ]
                        })
                        .collect(),
                )?;
            }
        }
        KeysCmd::Secret => bail!("handled before the store is opened"),
    }
    Ok(())
}

async fn apikey(service: &Service, out: &Output, cmd: ApikeyCmd) -> anyhow::Result<()> {
    let cli = &Actor::Cli;
    match cmd {
        ApikeyCmd::Create { name } => {
            let (created, key) = service.create_api_key(cli, &name).await?;
            if out.json {
                out.line(
                    &json!({ "name": created.name, "created_at": created.created_at, "key": key.expose() })
                        .to_string(),
                )?;
            } else {
                out.line(&key.expose())?;
                say_err(&format!(
                    "API key {name} created. It is shown once and stored only as a hash: keep it now."
                ));
            }
        }
        ApikeyCmd::List => {
            let keys = service.api_keys(cli).await?;
            if out.json {
                out.line(&json!({ "api_keys": keys }).to_string())?;
            } else {
                table(
                    &["NAME", "CREATED"],
                    keys.iter().map(|k| vec![k.name.clone(), k.created_at.to_string()]).collect(),
                )?;
            }
        }
        ApikeyCmd::Revoke { name } => {
            service.revoke_api_key(cli, &name).await.map_err(|e| match e {
                DomainError::NotFound(_) => anyhow::anyhow!("no API key named {name}"),
                other => other.into(),
            })?;
            out.message(&format!("revoked API key {name}"), json!({ "revoked": name }))?;
        }
    }
    Ok(())
}
