//! `cloakroom store …`: moving between stores ([`crate::copy`]). Prints what was copied, kind
//! by kind, and the verification; fails (exit 1) when the verification does.

use std::io::IsTerminal as _;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::output::{Output, say_err, table};
use crate::config::Config;
use crate::copy::{Options, Report};

#[derive(Debug, Subcommand)]
pub(super) enum StoreCmd {
    /// Copy everything from one store into another; a second run copies what changed since
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub(super) struct CopyArgs {
    /// The store to copy from: sqlite:PATH, redis://…, rediss://…, redis+sentinel://…,
    /// redis+cluster://…, postgres://…
    #[arg(long, value_name = "URL")]
    from: String,
    /// The store to copy into (a missing sqlite: file is made); best one no server serves yet
    #[arg(long, value_name = "URL")]
    to: String,
    /// Records read and written at a time (memory holds one page)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    page_size: u32,
    /// Skip the verification at the end (a first pass while servers still write the source)
    #[arg(long)]
    no_verify: bool,
}

pub(super) async fn run(cmd: StoreCmd, config: &Config, out: &Output) -> anyhow::Result<()> {
    let StoreCmd::Copy(args) = cmd;
    let options = Options {
        from: args.from,
        to: args.to,
        ca_pem: config.store_ca.clone(),
        page: usize::try_from(args.page_size).unwrap_or(1000),
        verify: !args.no_verify,
    };
    // Progress for a person watching; the notes are in the report too.
    let watched = !out.json && std::io::stderr().is_terminal();
    let report = crate::copy::run(&options, &mut |line| {
        if watched {
            say_err(line);
        }
    })
    .await?;
    print(&report, out)?;
    if report.verified == Some(false) {
        bail!(
            "verification failed: the destination does not hold what the source holds.\n  {}\n\
             If servers still write to the source, stop them and run the copy again; a copy \
             into a store that holds other data cannot verify.",
            report.differences().join("\n  ")
        );
    }
    Ok(())
}

fn print(report: &Report, out: &Output) -> anyhow::Result<()> {
    if out.json {
        out.line(&serde_json::to_string(report)?)?;
        return Ok(());
    }
    let rows = report
        .kinds
        .iter()
        .map(|k| {
            let verified = match &k.verified {
                None => "-".to_owned(),
                Some(c) if c.ok => "ok".to_owned(),
                Some(c) => format!("DIFFERS ({} here)", c.destination.count),
            };
            vec![
                k.kind.label().to_owned(),
                k.exported.to_string(),
                k.imported.written.to_string(),
                k.imported.unchanged.to_string(),
                k.imported.skipped.to_string(),
                k.removed.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                verified,
            ]
        })
        .collect();
    table(&["KIND", "COPIED", "WRITTEN", "UNCHANGED", "SKIPPED", "REMOVED", "VERIFIED"], rows)?;
    let total: u64 = report.kinds.iter().map(|k| k.exported).sum();
    out.line(&format!(
        "copied {total} records from {} to {} in {:.2} s ({:.0} sessions/s)",
        report.from, report.to, report.copy_seconds, report.sessions_per_second
    ))?;
    let held: u64 =
        report.kinds.iter().filter_map(|k| k.verified.as_ref()).map(|c| c.source.count).sum();
    match (report.verified, &report.checksum) {
        (Some(true), Some(sum)) => out.line(&format!(
            "verified: the destination holds the same {held} records (checksum {sum}); {:.2} s in all",
            report.seconds
        ))?,
        (Some(false), _) => out.line("verification FAILED (see below)")?,
        _ => out.line("not verified (--no-verify)")?,
    }
    for note in &report.notes {
        out.line(&format!("note: {note}"))?;
    }
    Ok(())
}
