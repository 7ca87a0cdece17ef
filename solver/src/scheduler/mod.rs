//! The scheduler: solves a graph in parallel, consulting the cache index first.
//!
//! Every needed vertex gets a task that waits for its inputs' keys, computes its cache key, and
//! either takes its output from the [`CacheIndex`] (or the imported records; when the worker
//! confirms the output still exists) or, once something needs its output, asks the [`Worker`]
//! to execute it on a blocking thread (see `step.rs` for how demand flows). Independent
//! vertices therefore run at the same time; equal vertices were already merged when the graph
//! was built; a step nothing that runs needs is not run. The first failure cancels the rest of
//! the solve: running steps see [`StepContext::is_cancelled`].

use crate::cache::CacheIndex;
use crate::cache::KEPT_SUMMARIES;
use crate::cachekey;
use crate::contenthash;
use crate::digest::Digest;
use crate::graph::{Graph, VertexId};
use crate::ops::{GitSource, HttpSource, Op, Output};
use crate::progress::{Event, Sender, Stream};
use crate::summary::{Summary, explain};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Errors a worker returns; their message is shown to the user as is.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How many lines of a failed step's output its error keeps.
pub const LOG_TAIL_LINES: usize = 12;

/// Executes ops. Implemented by the builder on top of the runner and the image store.
pub trait Worker: Send + Sync + 'static {
    /// The host directory of the named local source (`context` is the build context).
    fn local_root(&self, name: &str) -> Result<PathBuf, BoxError>;

    /// Downloads (or finds already downloaded and unchanged) an HTTP source; returns the
    /// directory holding its file and a digest of that file's content and metadata, which
    /// becomes part of the source's cache key.
    fn fetch_http(&self, source: &HttpSource) -> Result<(PathBuf, Digest), BoxError>;

    /// Checks out a git source (reusing an earlier checkout of the same commit); returns the
    /// directory and the commit's digest, which keys the step.
    fn fetch_git(&self, source: &GitSource) -> Result<(PathBuf, Digest), BoxError>;

    /// Executes `op` over the outputs of its inputs. Called on a blocking thread; long-running
    /// work should check [`StepContext::is_cancelled`].
    fn execute(
        &self,
        op: &Op,
        inputs: &[Arc<Output>],
        ctx: &StepContext,
    ) -> Result<Output, BoxError>;

    /// Whether an output recorded in the cache index can still be used (its layers exist).
    fn is_usable(&self, output: &Output) -> bool;

    /// Claims the step with cache key `key` before it runs, waiting while another process
    /// sharing the cache index holds the claim (it is computing the same step); the solver
    /// then looks the key up again, so concurrent builds compute a step once. The claim is
    /// held until the returned guard is dropped, after the result is recorded. Called on a
    /// blocking thread. The default claims nothing.
    fn claim(&self, _key: &Digest) -> Result<Option<Claim>, BoxError> {
        Ok(None)
    }
}

/// A held claim on a cache key (see [`Worker::claim`]); dropping it releases the claim.
pub type Claim = Box<dyn Send + Sync>;

/// What a step sees of the solve while it runs.
pub struct StepContext {
    vertex: VertexId,
    events: Option<Sender>,
    started: Instant,
    cancel: Arc<AtomicBool>,
    tail: Mutex<LogTail>,
}

#[derive(Default)]
struct LogTail {
    lines: VecDeque<String>,
    partial: String,
}

impl LogTail {
    fn push(&mut self, data: &[u8]) {
        self.partial.push_str(&String::from_utf8_lossy(data));
        while let Some(pos) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=pos).collect();
            self.lines
                .push_back(line.trim_end_matches(['\n', '\r']).to_string());
            if self.lines.len() > LOG_TAIL_LINES {
                self.lines.pop_front();
            }
        }
    }

    fn take(&mut self) -> Vec<String> {
        let mut lines: Vec<String> = self.lines.drain(..).collect();
        if !self.partial.is_empty() {
            lines.push(std::mem::take(&mut self.partial));
            if lines.len() > LOG_TAIL_LINES {
                lines.remove(0);
            }
        }
        lines
    }
}

impl StepContext {
    /// Reports output of the step.
    pub fn log(&self, stream: Stream, data: &[u8]) {
        self.tail.lock().expect("log tail").push(data);
        if let Some(events) = &self.events {
            let _ = events.send(Event::Log {
                vertex: self.vertex,
                stream,
                data: data.to_vec(),
                at: self.started.elapsed(),
            });
        }
    }

    /// Reports how far a transfer of the step has come (see [`Event::Progress`]).
    pub fn progress(&self, id: &str, current: u64, total: Option<u64>, done: bool) {
        if let Some(events) = &self.events {
            let _ = events.send(Event::Progress {
                vertex: self.vertex,
                id: id.to_string(),
                current,
                total,
                done,
                at: self.started.elapsed(),
            });
        }
    }

    /// Whether the solve was cancelled; a running step should stop as soon as it can.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The cancellation flag itself, for code that polls it without a context.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }
}

/// The default bound on concurrent exec steps: the number of CPUs.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Why a solve failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// A step failed.
    #[error("{message}")]
    Step {
        /// The failing vertex.
        vertex: VertexId,
        /// The error.
        message: String,
        /// The last lines the step printed.
        log_tail: Vec<String>,
    },
    /// The solver itself failed (the cache index, say).
    #[error(transparent)]
    Solver(#[from] crate::Error),
}

/// Solves graphs with one worker and one cache index.
pub struct Solver<W: Worker> {
    worker: Arc<W>,
    cache: Arc<CacheIndex>,
    events: Option<Sender>,
    cancel: Arc<AtomicBool>,
    no_cache: bool,
    no_cache_for: std::collections::HashSet<VertexId>,
    /// Bounds how many exec steps (processes) run at once (`--jobs`).
    exec_slots: Arc<tokio::sync::Semaphore>,
    /// Digests of unchanged context files, from earlier builds.
    stats: Option<Arc<crate::statcache::StatCache>>,
    salt: Option<Arc<str>>,
    /// Records from another machine's cache (`--cache-from`), looked up after the index.
    imported: Arc<HashMap<Digest, Output>>,
    /// The key of every vertex solved so far.
    keys: Arc<Mutex<HashMap<VertexId, Digest>>>,
    /// What went into each key (see [`crate::summary`]).
    summaries: Arc<Mutex<Summaries>>,
    /// The vertices that ran, in the order they finished.
    ran: Arc<Mutex<Vec<VertexId>>>,
    /// Summaries from another machine's cache, by key.
    imported_summaries: Arc<HashMap<Digest, Summary>>,
}

/// What went into each vertex's key, with the key ([`Solver::summaries`]).
pub type Summaries = HashMap<VertexId, (Digest, Arc<Summary>)>;

/// Why a step that ran missed the cache ([`Solver::explain_misses`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Miss {
    /// The step's progress name.
    pub name: String,
    /// Its key.
    pub key: Digest,
    /// The nearest earlier build of it, if any is known.
    pub nearest: Option<Digest>,
    /// What differs from that one.
    pub reasons: Vec<String>,
}

impl<W: Worker> Solver<W> {
    /// A solver that executes with `worker`, records in `cache` and reports to `events`.
    pub fn new(worker: Arc<W>, cache: Arc<CacheIndex>, events: Option<Sender>) -> Solver<W> {
        Solver {
            worker,
            cache,
            events,
            cancel: Arc::new(AtomicBool::new(false)),
            no_cache: false,
            no_cache_for: Default::default(),
            exec_slots: Arc::new(tokio::sync::Semaphore::new(default_jobs())),
            stats: None,
            salt: None,
            imported: Default::default(),
            keys: Default::default(),
            summaries: Default::default(),
            ran: Default::default(),
            imported_summaries: Default::default(),
        }
    }

    /// Explains misses against these summaries too (of an imported cache's keys).
    pub fn with_imported_summaries(mut self, summaries: HashMap<Digest, Summary>) -> Self {
        self.imported_summaries = Arc::new(summaries);
        self
    }

    /// What went into each key of the solves so far, by vertex.
    pub fn summaries(&self) -> Summaries {
        self.summaries.lock().expect("summaries").clone()
    }

    /// For each step that ran (and makes layers), why the cache did not have it: the nearest
    /// earlier build of it in the index or the imported cache, and what differs.
    pub fn explain_misses(&self, graph: &Graph) -> Result<Vec<Miss>, SolveError> {
        let summaries = self.summaries();
        let ran = self.ran.lock().expect("ran").clone();
        let summary_of = |k: &Digest| {
            self.imported_summaries
                .get(k)
                .cloned()
                .or_else(|| self.cache.summary(k).ok().flatten())
        };
        let ours: std::collections::HashSet<&Digest> = summaries.values().map(|(k, _)| k).collect();
        let mut misses = Vec::new();
        for v in ran {
            let vertex = graph.vertex(v);
            let (Some(name), Some((key, current))) = (&vertex.name, summaries.get(&v)) else {
                continue;
            };
            if matches!(
                vertex.op,
                Op::Scratch | Op::Local(_) | Op::Http(_) | Op::Git(_)
            ) {
                continue;
            }
            let mut candidates: Vec<(Digest, Summary)> = self
                .cache
                .summaries_like(&current.kind, current.stage.as_deref(), KEPT_SUMMARIES)?
                .into_iter()
                .chain(
                    self.imported_summaries
                        .iter()
                        .filter(|(_, s)| s.kind == current.kind && s.stage == current.stage)
                        .map(|(k, s)| (k.clone(), s.clone())),
                )
                // Earlier builds only: not the steps of this one.
                .filter(|(k, _)| !ours.contains(k))
                .collect();
            candidates.dedup_by(|a, b| a.0 == b.0);
            let inputs: Vec<Option<&Summary>> = vertex
                .inputs
                .iter()
                .map(|i| summaries.get(i).map(|(_, s)| &**s))
                .collect();
            let (nearest, reasons) = match explain(current, &inputs, &candidates, &summary_of) {
                Some((nearest, reasons)) => (Some(nearest), reasons),
                None => (
                    None,
                    vec![
                        "no earlier build of this step is known (here or in an imported cache)"
                            .to_string(),
                    ],
                ),
            };
            misses.push(Miss {
                name: name.clone(),
                key: key.clone(),
                nearest,
                reasons,
            });
        }
        Ok(misses)
    }

    /// Looks keys up in `records` too (cache imported from elsewhere) when the index does not
    /// have them. A record used is copied into the index, so later builds here find it while
    /// its layers stay usable.
    pub fn with_imported(mut self, records: HashMap<Digest, Output>) -> Self {
        self.imported = Arc::new(records);
        self
    }

    /// The cache key of every vertex the solves so far computed (also of those that came from
    /// the cache), for exporting the cache.
    pub fn keys(&self) -> HashMap<VertexId, Digest> {
        self.keys.lock().expect("solved keys").clone()
    }

    /// Hashes local sources under the stat cache's directory with it (see
    /// [`crate::statcache`]); the caller saves what it learned after the solve.
    pub fn with_stat_cache(mut self, stats: Arc<crate::statcache::StatCache>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Mixes `salt` into the cache key of every step that makes layers: for what changes the
    /// layers the worker makes without being part of the ops (the builder's
    /// `SOURCE_DATE_EPOCH`, which clamps file times), so such builds never share records
    /// with others.
    pub fn with_key_salt(mut self, salt: Option<String>) -> Self {
        self.salt = salt.map(Arc::from);
        self
    }

    /// Runs at most `jobs` exec steps at a time (at least one); other ops are not limited.
    pub fn with_jobs(mut self, jobs: usize) -> Self {
        self.exec_slots = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
        self
    }

    /// The flag that cancels a running solve when set (for Ctrl-C).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Ignores the cache index when looking up steps (`--no-cache`); results are still
    /// recorded.
    pub fn without_cache_lookups(mut self) -> Self {
        self.no_cache = true;
        self
    }

    /// Runs these vertices even if the cache has their results (`--no-cache-filter`); their
    /// new results replace the old ones.
    pub fn without_cache_lookups_for(
        mut self,
        vertices: impl IntoIterator<Item = VertexId>,
    ) -> Self {
        self.no_cache_for.extend(vertices);
        self
    }

    /// Solves `targets` and what they depend on; returns the output of every vertex that was
    /// taken from the cache or run (one whose consumers were all cached is neither).
    pub async fn solve(
        &self,
        graph: Arc<Graph>,
        targets: &[VertexId],
    ) -> Result<HashMap<VertexId, Arc<Output>>, SolveError> {
        let needed = graph.needed_for(targets);
        let mut consumers: HashMap<VertexId, usize> = HashMap::new();
        for &v in &needed {
            let mut inputs = graph.vertex(v).inputs.clone();
            inputs.sort();
            inputs.dedup();
            for i in inputs {
                *consumers.entry(i).or_default() += 1;
            }
        }
        let mut links: HashMap<VertexId, step::Link> = HashMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        for &v in &needed {
            let consumers = consumers.get(&v).copied().unwrap_or(0);
            // A step the cache is off for runs whether or not its consumers need it, as with
            // BuildKit's --no-cache-filter.
            let no_cache = self.no_cache || self.no_cache_for.contains(&v);
            let (publisher, link) = step::link(consumers, no_cache || targets.contains(&v));
            let inputs: Vec<step::Link> = graph
                .vertex(v)
                .inputs
                .iter()
                .map(|i| links[i].clone())
                .collect();
            links.insert(v, link);
            let step = Step {
                worker: self.worker.clone(),
                cache: self.cache.clone(),
                events: self.events.clone(),
                cancel: self.cancel.clone(),
                graph: graph.clone(),
                vertex: v,
                no_cache,
                exec_slots: self.exec_slots.clone(),
                stats: self.stats.clone(),
                salt: self.salt.clone(),
                imported: self.imported.clone(),
                summaries: self.summaries.clone(),
                ran: self.ran.clone(),
            };
            let keys = self.keys.clone();
            tasks.spawn(async move {
                let result = step.run(inputs, &publisher).await;
                match &result {
                    Ok((key, output)) => {
                        keys.lock().expect("solved keys").insert(v, key.clone());
                        publisher.key.send_replace(Some(Some(key.clone())));
                        publisher.output.send_replace(Some(output.clone()));
                    }
                    Err(_) => {
                        publisher.key.send_if_modified(|k| {
                            let unset = k.is_none();
                            if unset {
                                *k = Some(None);
                            }
                            unset
                        });
                        publisher.output.send_replace(Some(None));
                    }
                }
                result
            });
        }
        let mut first_error: Option<SolveError> = None;
        while let Some(joined) = tasks.join_next().await {
            let result = match joined {
                Ok(result) => result,
                Err(e) if e.is_cancelled() => continue,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            // A dependent of a failed vertex reports `None`; keep the root cause.
            if let Err(Some(e)) = result {
                self.cancel.store(true, Ordering::Relaxed);
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(crate::Error::Cancelled.into());
        }
        // Vertices nothing needed (all their consumers were cached) have no output.
        Ok(links
            .into_iter()
            .filter_map(|(v, link)| {
                let output = link.output.borrow().clone().flatten()?;
                Some((v, output))
            })
            .collect())
    }
}

/// What a solve would do with one vertex, found without running anything ([`Solver::plan`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// The vertex's cache key, as `solve` computes it; `None` when it depends on a download
    /// (whose content is known only by fetching it) or on a local source that cannot be read.
    pub key: Option<Digest>,
    /// For a step that makes layers with a known key: whether `solve` would take its result
    /// from the cache (a usable record, and the cache not turned off for it).
    pub cached: Option<bool>,
}

impl<W: Worker> Solver<W> {
    /// Plans `targets` without running anything: the key of every vertex they need, and
    /// whether the cache has it, by the rules `solve` follows (the same key function, salt,
    /// stat cache and cache switches), so what it says is what a build would do.
    pub fn plan(
        &self,
        graph: &Graph,
        targets: &[VertexId],
    ) -> Result<HashMap<VertexId, Planned>, SolveError> {
        let mut planned: HashMap<VertexId, Planned> = HashMap::new();
        for v in graph.needed_for(targets) {
            let vertex = graph.vertex(v);
            let inputs: Option<Vec<Digest>> = vertex
                .inputs
                .iter()
                .map(|i| planned.get(i).and_then(|p| p.key.clone()))
                .collect();
            let salt = self.salt.as_deref();
            let key = match (&vertex.op, inputs) {
                (Op::Http(_) | Op::Git(_), _) | (_, None) => None,
                (Op::Local(local), Some(inputs)) => {
                    let root = self.worker.local_root(&local.name).ok();
                    let stats = self.stats.as_deref();
                    root.and_then(|root| {
                        let stats = stats.filter(|s| s.root() == root);
                        contenthash::hash_local_with(&root, local, stats).ok()
                    })
                    .map(|content| cachekey::of_vertex(&vertex.op, &inputs, Some(&content), salt))
                }
                (op, Some(inputs)) => Some(cachekey::of_vertex(op, &inputs, None, salt)),
            };
            let cached = match (&vertex.op, &key) {
                (Op::Scratch | Op::Local(_) | Op::Http(_) | Op::Git(_) | Op::Image(_), _)
                | (_, None) => None,
                (_, Some(_)) if self.no_cache || self.no_cache_for.contains(&v) => Some(false),
                (_, Some(key)) => Some(
                    self.cache
                        .get(key)?
                        .is_some_and(|output| self.worker.is_usable(&output))
                        || self
                            .imported
                            .get(key)
                            .is_some_and(|output| self.worker.is_usable(output)),
                ),
            };
            planned.insert(v, Planned { key, cached });
        }
        Ok(planned)
    }
}

mod step;
use step::Step;
#[cfg(test)]
mod tests;
