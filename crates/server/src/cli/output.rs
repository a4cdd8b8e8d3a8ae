//! What the CLI prints: tables for people, JSON for programs, on standard output, and never a
//! panic. Every write returns its error ([`WriteError`]): a closed pipe
//! (`cloakroom user list | head -1`) ends the command quietly with exit code 0 ([`closed_pipe`]),
//! where `println!` would panic. Table cells
//! are cut to [`MAX_CELL`] characters and cleaned of control characters, so stored text (a user
//! agent, an audit detail) can neither move the cursor, recolour or rewrite the terminal, nor
//! make a column too wide to format. `--json` needs neither: serde escapes control characters.

use std::io::{self, Write as _};

use cloakroom_core::audit::AuditEvent;
use cloakroom_core::{Authenticated, Role, SessionId, User, Username};
use serde_json::json;

/// A write to standard output failed; kept apart from every other I/O error so that only a
/// closed standard output, and not, say, a store connection's broken pipe, counts as
/// [`closed_pipe`].
#[derive(Debug, thiserror::Error)]
#[error("writing to standard output")]
pub(super) struct WriteError(#[source] io::Error);

/// What the printing functions return.
type Printed = Result<(), WriteError>;

/// Widest a table column gets; a longer cell ends in `…`.
pub(super) const MAX_CELL: usize = 60;

/// Where the command's results go.
pub(super) struct Output {
    /// JSON instead of tables.
    pub(super) json: bool,
}

impl Output {
    /// One line of text.
    pub(super) fn line(&self, text: &str) -> Printed {
        let mut out = io::stdout().lock();
        writeln!(out, "{text}").and_then(|()| out.flush()).map_err(WriteError)
    }

    /// `text` for people, `value` for programs.
    pub(super) fn message(&self, text: &str, value: serde_json::Value) -> Printed {
        if self.json { self.line(&value.to_string()) } else { self.line(text) }
    }

    pub(super) fn users(&self, users: &[User]) -> Printed {
        if self.json {
            return self.line(&json!({ "users": users }).to_string());
        }
        let rows = users
            .iter()
            .map(|u| {
                vec![
                    u.username.to_string(),
                    u.roles.iter().map(Role::as_str).collect::<Vec<_>>().join(","),
                    if u.disabled { "disabled".into() } else { "active".into() },
                    if u.has_password { "yes".into() } else { "no".into() },
                    u.id.to_string(),
                    u.created_at.to_string(),
                ]
            })
            .collect();
        table(&["USERNAME", "ROLES", "STATUS", "PASSWORD", "ID", "CREATED"], rows)
    }

    pub(super) fn sessions(&self, sessions: &[Authenticated]) -> Printed {
        if self.json {
            let views: Vec<_> = sessions.iter().map(|a| a.view(None)).collect();
            return self.line(&json!({ "sessions": views }).to_string());
        }
        let rows = sessions
            .iter()
            .map(|a| {
                let s = &a.session;
                vec![
                    s.id.to_string(),
                    a.user.username.to_string(),
                    s.ip.clone().unwrap_or_default(),
                    s.created_at.to_string(),
                    s.last_seen_at.to_string(),
                    s.user_agent.clone().unwrap_or_default(),
                ]
            })
            .collect();
        table(&["ID", "USER", "IP", "CREATED", "LAST SEEN", "USER AGENT"], rows)
    }

    pub(super) fn audit(&self, events: &[AuditEvent]) -> Printed {
        if self.json {
            return self.line(&json!({ "events": events }).to_string());
        }
        let rows = events
            .iter()
            .map(|e| {
                vec![
                    e.at.to_string(),
                    e.kind.to_string(),
                    e.username.as_ref().map(Username::to_string).unwrap_or_default(),
                    e.actor.clone(),
                    e.session_id.as_ref().map(SessionId::to_string).unwrap_or_default(),
                    e.ip.clone().unwrap_or_default(),
                    e.detail.clone().unwrap_or_default(),
                ]
            })
            .collect();
        table(&["AT", "EVENT", "USER", "ACTOR", "SESSION", "IP", "DETAIL"], rows)
    }
}

/// Prints rows as left-aligned columns, each cell cleaned and cut by [`cell`].
pub(super) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> Printed {
    let rows: Vec<Vec<String>> =
        rows.iter().map(|row| row.iter().map(|c| cell(c)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            s.push_str(cell);
            if i + 1 < cells.len() {
                // Padded by hand: a width given to `format!` past u16::MAX panics.
                let pad = w.saturating_sub(cell.chars().count()) + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.truncate(s.trim_end().len());
        s
    };
    // One buffered writer for the whole table: a write per line would be a syscall per line.
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut write = || {
        writeln!(out, "{}", line(headers))?;
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            writeln!(out, "{}", line(&cells))?;
        }
        out.flush()
    };
    write().map_err(WriteError)
}

/// A table cell as a terminal may show it: control characters (C0 with ESC, CR and LF, DEL, C1)
/// and the invisible bidirectional overrides replaced by U+FFFD, and at most [`MAX_CELL`]
/// characters, the last one `…` when it was cut.
pub(super) fn cell(text: &str) -> String {
    let clean = |c: char| if shown_raw(c) { c } else { '\u{FFFD}' };
    if text.chars().count() <= MAX_CELL {
        return text.chars().map(clean).collect();
    }
    let mut s: String = text.chars().take(MAX_CELL - 1).map(clean).collect();
    s.push('…');
    s
}

/// Whether a terminal shows `c` as itself: not a control character, and not one of the
/// formatting characters that reorder what follows (a "Trojan Source" display).
fn shown_raw(c: char) -> bool {
    !c.is_control()
        && !matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether the command failed only because standard output was closed early (a reader such as
/// `head` went away): not a failure of the command, which exits 0 and says nothing.
pub(super) fn closed_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<WriteError>().is_some_and(|w| w.0.kind() == io::ErrorKind::BrokenPipe)
}

/// A line on standard error. If that is closed too, there is no one left to tell: the error is
/// ignored, where `eprintln!` would panic.
pub(super) fn say_err(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_cleaned_of_control_characters() {
        assert_eq!(cell("plain text"), "plain text");
        for evil in ["\x1b[31mred", "a\rb", "a\nb", "\u{9b}31m", "a\u{7f}", "x\u{202e}y"] {
            let shown = cell(evil);
            assert!(shown.chars().all(shown_raw), "{evil:?} -> {shown:?}");
            assert!(shown.contains('\u{FFFD}'), "{evil:?} -> {shown:?}");
        }
    }

    #[test]
    fn only_a_closed_stdout_is_a_quiet_end() {
        let broken = || io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(closed_pipe(&anyhow::Error::from(WriteError(broken()))));
        assert!(closed_pipe(&anyhow::Error::from(WriteError(broken())).context("listing")));
        // A store's connection breaking is a failure.
        assert!(!closed_pipe(&anyhow::Error::from(broken())));
        let other = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(!closed_pipe(&anyhow::Error::from(WriteError(other))));
    }

    #[test]
    fn wide_cells_are_cut_with_an_ellipsis() {
        assert_eq!(cell(&"a".repeat(MAX_CELL)), "a".repeat(MAX_CELL));
        let cut = cell(&"é".repeat(100_000));
        assert_eq!(cut.chars().count(), MAX_CELL);
        assert!(cut.ends_with('…'));
    }
}
