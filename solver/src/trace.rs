//! A trace of where a build's time goes (`rbuild build --trace FILE`), written as Chrome trace
//! JSON, which Perfetto (ui.perfetto.dev) and `chrome://tracing` open. Off unless
//! [`enable`]d: then every [`span`] (a piece of work on the thread that does it: running a
//! step's process, diffing its layer, compressing, unpacking, uploading) and every
//! [`interval`] (a phase of a step, on a track of that step's own: waiting for its inputs,
//! for a claim, for an exec slot, executing) is recorded in memory, and [`chrome_json`] makes
//! the file. Disabled, a span costs one relaxed atomic load.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static EVENTS: Mutex<Vec<Event>> = Mutex::new(Vec::new());
static START: OnceLock<Instant> = OnceLock::new();
static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static THREAD: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// Where an event is shown: a thread that did the work, or a step's own track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Track {
    /// An OS thread (numbered in the order they first record), with its name.
    Thread(u64, String),
    /// The track of a step (a vertex index), with its name.
    Step(usize, String),
    /// A track of its own, by name (a download, an upload).
    Named(String),
}

/// One recorded piece of time.
#[derive(Clone, Debug)]
pub struct Event {
    /// What it was (`run`, `diff`, `compress`).
    pub name: Cow<'static, str>,
    /// Its kind (`step`, `exec`, `layer`, `push`, `pull`, `build`).
    pub category: &'static str,
    /// Where it is shown.
    pub track: Track,
    /// Microseconds since the trace began.
    pub start_us: u64,
    /// Microseconds it took.
    pub duration_us: u64,
    /// Details (a step's name, a digest).
    pub detail: Option<String>,
}

/// Starts recording.
pub fn enable() {
    START.get_or_init(Instant::now);
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether recording is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn micros(at: Instant) -> u64 {
    let start = *START.get_or_init(Instant::now);
    at.saturating_duration_since(start).as_micros() as u64
}

fn push(event: Event) {
    EVENTS.lock().expect("trace events").push(event);
}

/// A piece of work on this thread, recorded when dropped.
#[must_use = "a span records when it is dropped"]
pub struct Span(Option<(Cow<'static, str>, &'static str, Instant, Option<String>)>);

impl Drop for Span {
    fn drop(&mut self) {
        let Some((name, category, start, detail)) = self.0.take() else {
            return;
        };
        let thread = std::thread::current();
        let track = Track::Thread(
            THREAD.with(|t| *t),
            thread.name().unwrap_or("thread").to_string(),
        );
        push(Event {
            name,
            category,
            track,
            start_us: micros(start),
            duration_us: start.elapsed().as_micros() as u64,
            detail,
        });
    }
}

/// A span of `category` named `name` (with `detail`, made only when recording), from now
/// until it is dropped.
pub fn span(
    category: &'static str,
    name: impl Into<Cow<'static, str>>,
    detail: impl FnOnce() -> Option<String>,
) -> Span {
    match enabled() {
        true => Span(Some((name.into(), category, Instant::now(), detail()))),
        false => Span(None),
    }
}

/// A phase of step `vertex` (named `step`) from `start` to now, on the step's own track.
pub fn interval(vertex: usize, step: &str, name: &'static str, start: Instant) {
    if !enabled() {
        return;
    }
    push(Event {
        name: Cow::Borrowed(name),
        category: "step",
        track: Track::Step(vertex, step.to_string()),
        start_us: micros(start),
        duration_us: start.elapsed().as_micros() as u64,
        detail: None,
    });
}

/// A piece of work from `start` to now on the track named `track` (work done by async tasks,
/// which move between threads).
pub fn record(track: &str, category: &'static str, name: &'static str, start: Instant) {
    if !enabled() {
        return;
    }
    push(Event {
        name: Cow::Borrowed(name),
        category,
        track: Track::Named(track.to_string()),
        start_us: micros(start),
        duration_us: start.elapsed().as_micros() as u64,
        detail: None,
    });
}

/// Everything recorded so far, as a Chrome trace (`traceEvents`: complete events, and the
/// names of the threads and step tracks).
pub fn chrome_json() -> serde_json::Value {
    let events = EVENTS.lock().expect("trace events").clone();
    let mut out = Vec::with_capacity(events.len() + 16);
    let mut named = std::collections::BTreeMap::new();
    let mut own: Vec<&str> = Vec::new();
    for e in &events {
        // Steps' tracks come after the threads', in vertex order, then the named ones.
        let (tid, label) = match &e.track {
            Track::Thread(n, name) => (*n, format!("{name} #{n}")),
            Track::Step(v, name) => (1_000_000 + *v as u64, name.clone()),
            Track::Named(name) => {
                let k = own.iter().position(|n| n == name).unwrap_or_else(|| {
                    own.push(name);
                    own.len() - 1
                });
                (2_000_000 + k as u64, name.clone())
            }
        };
        named.entry(tid).or_insert(label);
        let mut event = serde_json::json!({
            "name": e.name,
            "cat": e.category,
            "ph": "X",
            "ts": e.start_us,
            "dur": e.duration_us,
            "pid": 1,
            "tid": tid,
        });
        if let Some(detail) = &e.detail {
            event["args"] = serde_json::json!({"detail": detail});
        }
        out.push(event);
    }
    out.push(serde_json::json!({
        "name": "process_name", "ph": "M", "pid": 1, "args": {"name": "rbuild"},
    }));
    for (tid, label) in named {
        out.push(serde_json::json!({
            "name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": label},
        }));
        out.push(serde_json::json!({
            "name": "thread_sort_index", "ph": "M", "pid": 1, "tid": tid,
            "args": {"sort_index": tid},
        }));
    }
    serde_json::json!({"traceEvents": out, "displayTimeUnit": "ms"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_intervals_become_chrome_events() {
        // Disabled, nothing is recorded.
        drop(span("exec", "run", || Some("ignored".into())));
        assert!(EVENTS.lock().unwrap().is_empty());
        enable();
        let started = Instant::now();
        {
            let _s = span("exec", "run", || Some("RUN make".into()));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        interval(3, "[2/3] RUN make", "execute", started);
        let trace = chrome_json();
        let events = trace["traceEvents"].as_array().unwrap();
        let run = events.iter().find(|e| e["name"] == "run").unwrap();
        assert_eq!(run["ph"], "X");
        assert!(run["dur"].as_u64().unwrap() >= 2000, "{run}");
        assert_eq!(run["args"]["detail"], "RUN make");
        let phase = events.iter().find(|e| e["name"] == "execute").unwrap();
        assert_eq!(phase["tid"], 1_000_003);
        let names: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["name"] == "thread_name")
            .collect();
        assert!(names.iter().any(|n| n["args"]["name"] == "[2/3] RUN make"));
    }
}
