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
//! nothing (the build command prints only the image id).

use rbuild_solver::VertexId;
use rbuild_solver::progress::Event;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How much to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Plain unless stderr is a terminal (where the plain format is used too, for now).
    Auto,
    /// BuildKit's plain format.
    Plain,
    /// Only the result.
    Quiet,
    /// A terminal UI (currently the plain format).
    Tty,
}

/// Prints progress to stderr. Shared by the build command and the event task.
pub struct Printer {
    quiet: bool,
    next: usize,
    numbers: HashMap<VertexId, usize>,
    partial: HashMap<VertexId, (String, Duration)>,
}

impl Printer {
    /// A printer for `mode`.
    pub fn new(mode: Mode) -> Arc<Mutex<Printer>> {
        Arc::new(Mutex::new(Printer {
            quiet: mode == Mode::Quiet,
            next: 1,
            numbers: HashMap::new(),
            partial: HashMap::new(),
        }))
    }

    fn print(&self, text: &str) {
        if !self.quiet {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(text.as_bytes());
            let _ = err.flush();
        }
    }

    fn number(&mut self) -> usize {
        let n = self.next;
        self.next += 1;
        n
    }

    /// A step that is not a vertex (loading the Dockerfile, exporting), printed whole.
    pub fn step(&mut self, name: &str, lines: &[String], elapsed: Duration) {
        let n = self.number();
        let mut text = format!("#{n} {name}\n");
        for line in lines {
            text.push_str(&format!("#{n} {line}\n"));
        }
        text.push_str(&format!("#{n} DONE {:.1}s\n\n", elapsed.as_secs_f64()));
        self.print(&text);
    }

    /// Prints one solver event.
    pub fn event(&mut self, event: Event) {
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
        }
    }

    fn flush_partial(&mut self, vertex: VertexId, n: usize) -> String {
        match self.partial.remove(&vertex) {
            Some((buf, at)) if !buf.is_empty() => format!("#{n} {:.3} {buf}\n", at.as_secs_f64()),
            _ => String::new(),
        }
    }
}
