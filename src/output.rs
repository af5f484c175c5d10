//! The `Printer`: data to stdout, everything else to stderr.
//!
//! `--json` turns data into JSON; `--quiet` silences status lines and spinners; spinners (indicatif)
//! appear only when stderr is a terminal. Colour is used only on a terminal and never when `NO_COLOR`
//! is set or `--no-color` is given; every message reads the same without it.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct Printer {
    pub json: bool,
    pub quiet: bool,
    pub color: bool,
    stderr_tty: bool,
}

impl Printer {
    pub fn new(json: bool, quiet: bool, no_color: bool) -> Self {
        let stderr_tty = std::io::stderr().is_terminal();
        Self {
            json,
            quiet,
            color: !no_color && stderr_tty,
            stderr_tty,
        }
    }

    /// Writes a data line to stdout.
    pub fn line(&self, text: impl AsRef<str>) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", text.as_ref());
    }

    /// Writes `value` as pretty JSON to stdout.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) {
        self.line(serde_json::to_string_pretty(value).expect("plain data serialises"));
    }

    /// A status line on stderr, silenced by `--quiet`.
    pub fn status(&self, text: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", text.as_ref());
        }
    }

    /// Whether status meant for a person at a terminal is shown: stderr is a terminal and no
    /// `--quiet`.
    pub fn on_terminal(&self) -> bool {
        self.stderr_tty && !self.quiet
    }

    /// A warning on stderr; shown even with `--quiet`.
    pub fn warn(&self, text: impl AsRef<str>) {
        let label = if self.color {
            "\x1b[33mwarning\x1b[0m"
        } else {
            "warning"
        };
        eprintln!("{label}: {}", text.as_ref());
    }

    /// A spinner on stderr when it is a terminal and not `--quiet`; hidden otherwise.
    pub fn spinner(&self, message: impl Into<String>) -> ProgressBar {
        if self.quiet || !self.stderr_tty {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed:.dim}").expect("template"));
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(80));
        bar
    }

    /// Prints rows as an aligned table with a header, to stdout.
    pub fn table(&self, header: &[&str], rows: &[Vec<String>]) {
        self.line(table(header, rows));
    }
}

/// Formats an aligned plain-text table; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let format_row = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    (*c).to_owned()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut lines = vec![format_row(header.to_vec())];
    lines.extend(rows.iter().map(|r| format_row(r.iter().map(String::as_str).collect())));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["demo".into(), "shell".into()],
            vec!["a-longer-name".into(), "codex".into()],
        ];
        assert_eq!(
            super::table(&["NAME", "HARNESS"], &rows),
            "NAME           HARNESS\ndemo           shell\na-longer-name  codex"
        );
    }
}
