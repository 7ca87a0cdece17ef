//! Printing frontend diagnostics: rustc-style reports with colours (ariadne) on a terminal,
//! the plain `file:line:col: error: …` form everywhere else (pipes, CI logs, `--progress=plain`),
//! because editors and log scanners parse that form.

use ariadne::{Color, Config, IndexType, Label, Report, ReportKind, Source};
use rbuild_frontend::diagnostic::{Diagnostic, Severity};
use std::io::IsTerminal;

/// Where diagnostics go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Standard output (`rbuild lint`).
    Stdout,
    /// Standard error (builds).
    Stderr,
}

/// Prints diagnostics, fancy when `fancy_allowed` and the target is a terminal.
pub fn print(diagnostics: &[Diagnostic], target: Target, fancy_allowed: bool) {
    let terminal = match target {
        Target::Stdout => std::io::stdout().is_terminal(),
        Target::Stderr => std::io::stderr().is_terminal(),
    };
    for d in diagnostics {
        // ariadne shows whole lines; `render` cuts very long ones.
        let fancy_fits = d.span.is_some() && !d.has_long_lines();
        if fancy_allowed && terminal && fancy_fits && fancy(d, target).is_ok() {
            continue;
        }
        match target {
            Target::Stdout => print!("{}", d.render()),
            Target::Stderr => eprint!("{}", d.render()),
        }
    }
}

fn fancy(d: &Diagnostic, target: Target) -> std::io::Result<()> {
    let span = d.span.expect("checked by the caller");
    let text = &d.file.text;
    let start = span.start.min(text.len());
    let end = span.end.max(start + 1).min(text.len()).max(start);
    let name = d.file.name.clone();
    let (kind, color) = match d.severity {
        Severity::Error => (ReportKind::Error, Color::Red),
        Severity::Warning => (ReportKind::Warning, Color::Yellow),
    };
    let mut report = Report::build(kind, (name.clone(), start..end))
        .with_config(Config::default().with_index_type(IndexType::Byte))
        .with_message(&d.message)
        .with_label(Label::new((name.clone(), start..end)).with_color(color));
    if let Some(rule) = d.rule {
        report = report
            .with_code(rule.name)
            .with_note(format!("{} ({})", rule.description, rule.url));
    }
    if let Some(help) = &d.help {
        report = report.with_help(help);
    }
    let report = report.finish();
    let cache = (name, Source::from(text.clone()));
    match target {
        Target::Stdout => report.print(cache),
        Target::Stderr => report.eprint(cache),
    }
}
