//! Progress output in BuildKit's plain format:
//!
//! ```text
//! #3 [builder 2/3] RUN ./make.sh
//! #3 0.052 building…
//! #3 DONE 0.4s
//!
//! #4 [stage-1 2/2] COPY --from=builder /out /out
//! #4 CACHED
//! ```
//!
//! Lines of parallel steps interleave; the `#N` prefix tells them apart. `quiet` prints
//! nothing (the build command prints only the image id). `json` prints one JSON object per
//! event instead, for CI tools:
//!
//! ```text
//! {"time":"2026-11-28T01:02:03.456Z","event":"started","id":3,"name":"[builder 2/3] RUN ./make.sh"}
//! {"time":"…","event":"log","id":3,"stream":"stdout","data":"building…\n"}
//! {"time":"…","event":"done","id":3,"elapsed":0.4}
//! {"time":"…","event":"summary","status":"ok","elapsed":1.2,"steps":5,"cached":3,"ran":2,"failed":0}
//! ```
//!
//! Other events are `cached`, `error` (with `error`), `step` (an internal step with its
//! `lines`) and `diagnostic` (`severity`, `message`, the rendered `text`). Every mode but
//! quiet and rawjson (BuildKit's own stream, see [`crate::cli::rawjson`]) ends with the
//! summary.

use crate::units::transfer_line;
use rbuild_solver::VertexId;
use rbuild_solver::progress::Event;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How much to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The live view when stderr is a terminal, else plain.
    Auto,
    /// BuildKit's plain format.
    Plain,
    /// Only the result.
    Quiet,
    /// A live view: one line per running step with a timer and its last line of output;
    /// finished steps collapse to one line each.
    Tty,
    /// One JSON object per event (on stderr).
    Json,
    /// BuildKit's SolveStatus updates, one JSON object per line, as buildx's
    /// `--progress=rawjson` (see [`crate::cli::rawjson`]).
    Rawjson,
}

/// What the build did, for the summary.
#[derive(Default)]
struct Counts {
    steps: usize,
    cached: usize,
    ran: usize,
    failed: usize,
    canceled: usize,
}

/// Prints progress to stderr. Shared by the build command and the event task.
pub struct Printer {
    quiet: bool,
    json: bool,
    raw: Option<crate::cli::rawjson::RawJson>,
    tty: Option<Tty>,
    started: std::time::Instant,
    counts: Counts,
    next: usize,
    numbers: HashMap<VertexId, usize>,
    partial: HashMap<VertexId, (String, Duration)>,
    /// When each transfer of a vertex was first reported.
    transfers: HashMap<(VertexId, String), Duration>,
}

impl Printer {
    /// A printer for `mode`.
    pub fn new(mode: Mode) -> Arc<Mutex<Printer>> {
        use std::io::IsTerminal;
        // Only a terminal shows the live view; `--progress=tty` elsewhere (a CI log, a pipe)
        // falls back to plain, as buildx does, rather than printing nothing.
        let live = matches!(mode, Mode::Tty | Mode::Auto) && std::io::stderr().is_terminal();
        Arc::new(Mutex::new(Printer {
            quiet: mode == Mode::Quiet,
            json: mode == Mode::Json,
            raw: (mode == Mode::Rawjson).then(crate::cli::rawjson::RawJson::new),
            tty: live.then(Tty::new),
            started: std::time::Instant::now(),
            counts: Counts::default(),
            next: 1,
            numbers: HashMap::new(),
            partial: HashMap::new(),
            transfers: HashMap::new(),
        }))
    }

    fn print(&self, text: &str) {
        if !self.quiet {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(text.as_bytes());
            let _ = err.flush();
        }
    }

    /// Prints SolveStatus lines (rawjson mode).
    fn raw_lines(&self, lines: Vec<serde_json::Value>) {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        self.print(&text);
    }

    fn number(&mut self) -> usize {
        let n = self.next;
        self.next += 1;
        n
    }

    /// Prints one JSON event object (json mode), stamped with the time.
    fn json_event(&self, mut fields: serde_json::Map<String, serde_json::Value>) {
        let mut object = serde_json::Map::new();
        object.insert(
            "time".into(),
            crate::units::rfc3339(std::time::SystemTime::now()).into(),
        );
        object.append(&mut fields);
        self.print(&format!("{}\n", serde_json::Value::Object(object)));
    }

    /// Reports diagnostics: as JSON events in json mode; otherwise `render_text` prints them.
    pub fn diagnostics(
        &self,
        diagnostics: &[rbuild_frontend::Diagnostic],
        render_text: impl FnOnce(&[rbuild_frontend::Diagnostic]),
    ) {
        if self.raw.is_some() {
            // Warnings are part of the stream; errors are text, as buildx prints them.
            let (warnings, errors): (Vec<_>, Vec<_>) = diagnostics
                .iter()
                .cloned()
                .partition(|d| d.severity != rbuild_frontend::Severity::Error);
            self.raw_lines(
                warnings
                    .iter()
                    .map(crate::cli::rawjson::RawJson::warning)
                    .collect(),
            );
            if !errors.is_empty() {
                render_text(&errors);
            }
            return;
        }
        if !self.json {
            match &self.tty {
                Some(tty) => tty.multi.suspend(|| render_text(diagnostics)),
                None => render_text(diagnostics),
            }
            return;
        }
        for d in diagnostics {
            let severity = match d.severity {
                rbuild_frontend::Severity::Error => "error",
                _ => "warning",
            };
            let pos = d.span.map(|s| d.file.position(s.start));
            self.json_event(fields(serde_json::json!({
                "event": "diagnostic",
                "severity": severity,
                "message": d.message,
                "rule": d.rule.map(|r| r.name),
                "file": d.file.name,
                "line": pos.map(|p| p.line),
                "column": pos.map(|p| p.column),
                "text": d.render(),
            })));
        }
    }

    /// The last thing printed: what the build did and how long it took.
    pub fn summary(&self, ok: bool) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let c = &self.counts;
        if self.raw.is_some() {
            return;
        }
        if self.json {
            self.json_event(fields(serde_json::json!({
                "event": "summary",
                "status": if ok { "ok" } else { "failed" },
                "elapsed": round(elapsed),
                "steps": c.steps,
                "cached": c.cached,
                "ran": c.ran,
                "failed": c.failed,
                "canceled": c.canceled,
            })));
        } else {
            let text = format!(
                "{} in {elapsed:.1}s: {} step{}, {} cached, {} run{}\n",
                if ok { "built" } else { "failed" },
                c.steps,
                if c.steps == 1 { "" } else { "s" },
                c.cached,
                c.ran,
                match (c.failed, c.canceled) {
                    (0, 0) => String::new(),
                    (f, 0) => format!(", {f} failed"),
                    (0, k) => format!(", {k} canceled"),
                    (f, k) => format!(", {f} failed, {k} canceled"),
                }
            );
            match &self.tty {
                Some(tty) => tty.line(text.trim_end()),
                None => self.print(&text),
            }
        }
    }

    /// A step that is not a vertex (loading the Dockerfile, exporting), printed whole.
    pub fn step(&mut self, name: &str, lines: &[String], elapsed: Duration) {
        if let Some(raw) = &mut self.raw {
            let out = raw.step(name, lines, elapsed);
            self.raw_lines(out);
            return;
        }
        if let Some(tty) = &self.tty {
            tty.line(&format!("✔ {name} {:.1}s", elapsed.as_secs_f64()));
            return;
        }
        if self.json {
            let n = self.number();
            self.json_event(fields(serde_json::json!({
                "event": "step",
                "id": n,
                "name": name,
                "lines": lines,
                "elapsed": round(elapsed.as_secs_f64()),
            })));
            return;
        }
        let n = self.number();
        let mut text = format!("#{n} {name}\n");
        for line in lines {
            text.push_str(&format!("#{n} {line}\n"));
        }
        text.push_str(&format!("#{n} DONE {:.1}s\n\n", elapsed.as_secs_f64()));
        self.print(&text);
    }

    /// On a terminal, a live line for a transfer outside the solve (an export, a push): the
    /// bytes `counter` has counted and the rate, until the returned guard is dropped.
    pub fn live(&self, name: &str, counter: Arc<crate::export::compress::Counter>) -> Option<Live> {
        let tty = self.tty.as_ref()?;
        let bar = tty.multi.add(indicatif::ProgressBar::new_spinner());
        bar.set_style(Tty::style(
            "{spinner} {msg} {bytes} {bytes_per_sec} {elapsed:>4}",
        ));
        bar.set_message(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = {
            let (bar, stop) = (bar.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    bar.set_position(counter.get());
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Some(Live {
            bar,
            stop,
            ticker: Some(ticker),
        })
    }

    /// Prints one solver event.
    pub fn event(&mut self, event: Event) {
        match &event {
            Event::Started { .. } => self.counts.steps += 1,
            Event::Cached { .. } => self.counts.cached += 1,
            Event::Done { .. } => self.counts.ran += 1,
            Event::Failed { .. } => self.counts.failed += 1,
            Event::Canceled { .. } => self.counts.canceled += 1,
            Event::Log { .. } | Event::Progress { .. } => {}
        }
        if let Some(raw) = &mut self.raw {
            let out = raw.event(event);
            self.raw_lines(out);
            return;
        }
        if self.json {
            self.json_solver_event(event);
            return;
        }
        if let Some(tty) = &mut self.tty {
            if let Event::Progress {
                vertex,
                id,
                current,
                total,
                at,
                ..
            } = &event
            {
                let started = *self.transfers.entry((*vertex, id.clone())).or_insert(*at);
                let short: String = id.trim_start_matches("sha256:").chars().take(12).collect();
                let line = transfer_line(&short, *current, *total, at.saturating_sub(started));
                tty.status(*vertex, &line);
            }
            tty.event(event);
            return;
        }
        match event {
            Event::Started { vertex, name } => {
                let n = self.number();
                self.numbers.insert(vertex, n);
                self.print(&format!("#{n} {name}\n"));
            }
            Event::Log {
                vertex, data, at, ..
            } => {
                let n = self.numbers.get(&vertex).copied().unwrap_or(0);
                let (buf, first_at) = self
                    .partial
                    .entry(vertex)
                    .or_insert_with(|| (String::new(), at));
                if buf.is_empty() {
                    *first_at = at;
                }
                buf.push_str(&String::from_utf8_lossy(&data));
                let mut text = String::new();
                while let Some(pos) = buf.find('\n') {
                    let line: String = buf.drain(..=pos).collect();
                    text.push_str(&format!(
                        "#{n} {:.3} {}\n",
                        first_at.as_secs_f64(),
                        line.trim_end_matches(['\n', '\r'])
                    ));
                    *first_at = at;
                }
                self.print(&text);
            }
            Event::Progress {
                vertex,
                id,
                current,
                total,
                done,
                at,
            } => {
                let n = self.numbers.get(&vertex).copied().unwrap_or(0);
                let started = *self.transfers.entry((vertex, id.clone())).or_insert(at);
                // Plain output gets the final line of each transfer, as BuildKit's does.
                if done {
                    let line = transfer_line(&id, current, total, at.saturating_sub(started));
                    self.print(&format!("#{n} {line} done\n"));
                }
            }
            Event::Cached { vertex } => {
                let n = self.numbers.get(&vertex).copied().unwrap_or(0);
                self.print(&format!("#{n} CACHED\n\n"));
            }
            Event::Done { vertex, elapsed } => {
                let n = self.numbers.get(&vertex).copied().unwrap_or(0);
                let rest = self.flush_partial(vertex, n);
                self.print(&format!(
                    "{rest}#{n} DONE {:.1}s\n\n",
                    elapsed.as_secs_f64()
                ));
            }
            Event::Failed { vertex, error, .. } => {
                let n = self.numbers.get(&vertex).copied().unwrap_or(0);
                let rest = self.flush_partial(vertex, n);
                self.print(&format!("{rest}#{n} ERROR: {error}\n\n"));
            }
            Event::Canceled { vertex, .. } => {
                let n = self.numbers.get(&vertex).copied().unwrap_or(0);
                let rest = self.flush_partial(vertex, n);
                self.print(&format!("{rest}#{n} CANCELED\n\n"));
            }
        }
    }

    fn json_solver_event(&mut self, event: Event) {
        let object = match event {
            Event::Started { vertex, name } => {
                let n = self.number();
                self.numbers.insert(vertex, n);
                serde_json::json!({"event": "started", "id": n, "name": name})
            }
            Event::Log {
                vertex,
                stream,
                data,
                at,
            } => serde_json::json!({
                "event": "log",
                "id": self.numbers.get(&vertex).copied().unwrap_or(0),
                "stream": match stream {
                    rbuild_solver::progress::Stream::Stdout => "stdout",
                    rbuild_solver::progress::Stream::Stderr => "stderr",
                },
                "data": String::from_utf8_lossy(&data),
                "at": round(at.as_secs_f64()),
            }),
            Event::Progress {
                vertex,
                id,
                current,
                total,
                done,
                at,
            } => serde_json::json!({
                "event": "progress",
                "id": self.numbers.get(&vertex).copied().unwrap_or(0),
                "transfer": id,
                "current": current,
                "total": total,
                "done": done,
                "at": round(at.as_secs_f64()),
            }),
            Event::Cached { vertex } => serde_json::json!({
                "event": "cached",
                "id": self.numbers.get(&vertex).copied().unwrap_or(0),
            }),
            Event::Done { vertex, elapsed } => serde_json::json!({
                "event": "done",
                "id": self.numbers.get(&vertex).copied().unwrap_or(0),
                "elapsed": round(elapsed.as_secs_f64()),
            }),
            Event::Canceled { vertex, elapsed } => serde_json::json!({
                "event": "canceled",
                "id": self.numbers.get(&vertex).copied().unwrap_or(0),
                "elapsed": round(elapsed.as_secs_f64()),
            }),
            Event::Failed {
                vertex,
                elapsed,
                error,
            } => serde_json::json!({
                "event": "error",
                "id": self.numbers.get(&vertex).copied().unwrap_or(0),
                "elapsed": round(elapsed.as_secs_f64()),
                "error": error,
            }),
        };
        self.json_event(fields(object));
    }

    fn flush_partial(&mut self, vertex: VertexId, n: usize) -> String {
        match self.partial.remove(&vertex) {
            Some((buf, at)) if !buf.is_empty() => format!("#{n} {:.3} {buf}\n", at.as_secs_f64()),
            _ => String::new(),
        }
    }
}

/// A live transfer line; see [`Printer::live`].
pub struct Live {
    bar: indicatif::ProgressBar,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}

/// The fields of a JSON object literal.
fn fields(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// Seconds with millisecond precision.
fn round(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// The live view (`--progress=tty`), on indicatif: a spinner line per running step with its
/// elapsed time and last line of output; a finished step's line stays, collapsed.
struct Tty {
    multi: indicatif::MultiProgress,
    bars: HashMap<VertexId, (indicatif::ProgressBar, String)>,
}

impl Tty {
    fn new() -> Tty {
        Tty {
            multi: indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::stderr(),
            ),
            bars: HashMap::new(),
        }
    }

    /// A line above the running steps.
    fn line(&self, text: &str) {
        let _ = self.multi.println(text);
    }

    /// Shows `text` after the name of the running step `vertex`.
    fn status(&self, vertex: VertexId, text: &str) {
        if let Some((bar, name)) = self.bars.get(&vertex) {
            bar.set_message(running(name, text));
        }
    }

    /// Ends the running line of `vertex` and prints its final line above the running ones,
    /// where it stays (in the terminal's scrollback too) when the build ends, as Docker's.
    fn finish(&mut self, vertex: VertexId, line: impl FnOnce(&str) -> String) {
        if let Some((bar, name)) = self.bars.remove(&vertex) {
            bar.finish_and_clear();
            let _ = self.multi.println(line(&name));
        }
    }

    fn style(template: &str) -> indicatif::ProgressStyle {
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Started { vertex, name } => {
                let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
                bar.set_style(Self::style("{spinner} {wide_msg} {elapsed:>4}"));
                bar.set_message(name.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                self.bars.insert(vertex, (bar, name));
            }
            Event::Log { vertex, data, .. } => {
                if let Some((bar, name)) = self.bars.get(&vertex) {
                    let text = String::from_utf8_lossy(&data);
                    if let Some(line) = text.lines().rev().find(|l| !l.trim().is_empty()) {
                        bar.set_message(running(name, line.trim_end()));
                    }
                }
            }
            // Printer::event formats these (it knows when each transfer started).
            Event::Progress { .. } => {}
            Event::Cached { vertex } => self.finish(vertex, |name| format!("✔ {name} CACHED")),
            Event::Done { vertex, elapsed } => self.finish(vertex, |name| {
                format!("✔ {name} {:.1}s", elapsed.as_secs_f64())
            }),
            Event::Canceled { vertex, elapsed } => self.finish(vertex, |name| {
                format!("✘ {name} {:.1}s CANCELED", elapsed.as_secs_f64())
            }),
            Event::Failed {
                vertex,
                elapsed,
                error,
            } => self.finish(vertex, |name| {
                format!("✘ {name} {:.1}s ERROR: {error}", elapsed.as_secs_f64())
            }),
        }
    }
}

/// A running step's line: its name and its last line of output. A long name is shortened so
/// that the output still shows on a line of the terminal's width.
fn running(name: &str, text: &str) -> String {
    const NAME: usize = 48;
    let short: String = if name.chars().count() > NAME {
        let mut s: String = name.chars().take(NAME - 1).collect();
        s.push('…');
        s
    } else {
        name.to_string()
    };
    format!("{short} │ {text}")
}
