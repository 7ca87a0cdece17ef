//! The scheduler: solves a graph in parallel, consulting the cache index first.
//!
//! Every needed vertex gets a task that waits for its inputs, computes its cache key, and either
//! takes its output from the [`CacheIndex`] (when the worker confirms the output still exists) or
//! asks the [`Worker`] to execute it on a blocking thread. Independent vertices therefore run at
//! the same time; equal vertices were already merged when the graph was built. The first failure
//! cancels the rest of the solve: running steps see [`StepContext::is_cancelled`].

use crate::cache::CacheIndex;
use crate::cachekey;
use crate::contenthash;
use crate::digest::Digest;
use crate::graph::{Graph, VertexId};
use crate::ops::{HttpSource, Op, Output};
use crate::progress::{Event, Sender, Stream};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

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
}

/// What a vertex's task publishes: its cache key and output, or `None` if it failed.
type Published = Option<Option<(Digest, Arc<Output>)>>;

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
        }
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

    /// Solves `targets` and everything they depend on; returns the output of every vertex that
    /// was needed.
    pub async fn solve(
        &self,
        graph: Arc<Graph>,
        targets: &[VertexId],
    ) -> Result<HashMap<VertexId, Arc<Output>>, SolveError> {
        let needed = graph.needed_for(targets);
        let mut channels: HashMap<VertexId, watch::Receiver<Published>> = HashMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        for &v in &needed {
            let (tx, rx) = watch::channel::<Published>(None);
            let inputs: Vec<watch::Receiver<Published>> = graph
                .vertex(v)
                .inputs
                .iter()
                .map(|i| channels[i].clone())
                .collect();
            channels.insert(v, rx);
            let step = Step {
                worker: self.worker.clone(),
                cache: self.cache.clone(),
                events: self.events.clone(),
                cancel: self.cancel.clone(),
                graph: graph.clone(),
                vertex: v,
                no_cache: self.no_cache || self.no_cache_for.contains(&v),
                exec_slots: self.exec_slots.clone(),
                stats: self.stats.clone(),
                salt: self.salt.clone(),
                imported: self.imported.clone(),
            };
            let keys = self.keys.clone();
            tasks.spawn(async move {
                let result = step.run(inputs).await;
                if let Ok((key, _)) = &result {
                    keys.lock().expect("solved keys").insert(v, key.clone());
                }
                let published = result.as_ref().ok().cloned();
                let _ = tx.send(Some(published));
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
        Ok(channels
            .into_iter()
            .map(|(v, rx)| {
                let output = rx
                    .borrow()
                    .clone()
                    .flatten()
                    .expect("every needed vertex finished")
                    .1;
                (v, output)
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
                (Op::Http(_), _) | (_, None) => None,
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
                (Op::Scratch | Op::Local(_) | Op::Http(_) | Op::Image(_), _) | (_, None) => None,
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

struct Step<W: Worker> {
    worker: Arc<W>,
    cache: Arc<CacheIndex>,
    events: Option<Sender>,
    cancel: Arc<AtomicBool>,
    graph: Arc<Graph>,
    vertex: VertexId,
    no_cache: bool,
    exec_slots: Arc<tokio::sync::Semaphore>,
    stats: Option<Arc<crate::statcache::StatCache>>,
    salt: Option<Arc<str>>,
    imported: Arc<HashMap<Digest, Output>>,
}

impl<W: Worker> Step<W> {
    fn send(&self, event: Event) {
        if self.graph.vertex(self.vertex).name.is_some()
            && let Some(events) = &self.events
        {
            let _ = events.send(event);
        }
    }

    /// The usable cached output for `key` (reported as cached), from the index or else from
    /// the imported records, unless the cache is off for this step.
    async fn lookup(&self, key: &Digest) -> Result<Option<Arc<Output>>, Option<SolveError>> {
        if self.no_cache {
            return Ok(None);
        }
        let local = self
            .cache
            .get(key)
            .map_err(|e| Some(SolveError::Solver(e)))?;
        let mut found = None;
        if let Some(output) = local
            && self.usable(&output).await
        {
            found = Some(output);
        } else if let Some(output) = self.imported.get(key)
            && self.usable(output).await
        {
            self.cache
                .put(key, output)
                .map_err(|e| Some(SolveError::Solver(e)))?;
            found = Some(output.clone());
        }
        let Some(output) = found else {
            return Ok(None);
        };
        self.send(Event::Cached {
            vertex: self.vertex,
        });
        Ok(Some(Arc::new(output)))
    }

    /// Whether the worker can still use a recorded output (its layers exist).
    async fn usable(&self, output: &Output) -> bool {
        let worker = self.worker.clone();
        let check = output.clone();
        let usable = tokio::task::spawn_blocking(move || worker.is_usable(&check))
            .await
            .expect("usability check does not panic");
        if !usable {
            tracing::debug!("cache record names missing layers; running the step again");
        }
        usable
    }

    /// Runs one vertex. `Err(None)` means an input failed (the input reports the cause).
    async fn run(
        self,
        mut inputs: Vec<watch::Receiver<Published>>,
    ) -> Result<(Digest, Arc<Output>), Option<SolveError>> {
        let mut input_keys = Vec::new();
        let mut input_outputs = Vec::new();
        for rx in &mut inputs {
            let published = rx
                .wait_for(|p| p.is_some())
                .await
                .map_err(|_| None)?
                .clone()
                .flatten();
            let (key, output) = published.ok_or(None)?;
            input_keys.push(key);
            input_outputs.push(output);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(None);
        }
        let vertex = self.graph.vertex(self.vertex).clone();
        if let Some(name) = &vertex.name {
            self.send(Event::Started {
                vertex: self.vertex,
                name: name.clone(),
            });
        }
        let started = Instant::now();
        let fail = |message: String, log_tail: Vec<String>| {
            self.send(Event::Failed {
                vertex: self.vertex,
                elapsed: started.elapsed(),
                error: message.clone(),
            });
            Some(SolveError::Step {
                vertex: self.vertex,
                message,
                log_tail,
            })
        };

        // Sources whose output is not worth caching: scratch, and local directories and
        // downloads (whose "execution" is hashing their content, which is also how their key
        // is computed).
        match &vertex.op {
            Op::Scratch => {
                let key = cachekey::of_vertex(&vertex.op, &input_keys, None, None);
                self.send(Event::Done {
                    vertex: self.vertex,
                    elapsed: started.elapsed(),
                });
                return Ok((key, Arc::new(Output::default())));
            }
            Op::Local(_) | Op::Http(_) => {
                let worker = self.worker.clone();
                let op = vertex.op.clone();
                let stats = self.stats.clone();
                let hashed = tokio::task::spawn_blocking(move || match &op {
                    Op::Local(local) => {
                        let root = worker.local_root(&local.name)?;
                        let stats = stats.as_deref().filter(|s| s.root() == root);
                        let digest = contenthash::hash_local_with(&root, local, stats)?;
                        Ok::<_, BoxError>((root, digest))
                    }
                    Op::Http(http) => worker.fetch_http(http),
                    _ => unreachable!("only sources are hashed here"),
                })
                .await
                .expect("hashing does not panic");
                let (root, content) = hashed.map_err(|e| fail(e.to_string(), vec![]))?;
                let key = cachekey::of_vertex(&vertex.op, &input_keys, Some(&content), None);
                self.send(Event::Done {
                    vertex: self.vertex,
                    elapsed: started.elapsed(),
                });
                let output = Output {
                    layers: vec![],
                    local: Some(root),
                };
                return Ok((key, Arc::new(output)));
            }
            _ => {}
        }

        let key = cachekey::of_vertex(&vertex.op, &input_keys, None, self.salt.as_deref());
        if let Some(output) = self.lookup(&key).await? {
            return Ok((key, output));
        }
        // Another process may be computing the same step: wait for it, then look again.
        let _claim = if self.no_cache {
            None
        } else {
            let worker = self.worker.clone();
            let claim_key = key.clone();
            let claim = tokio::task::spawn_blocking(move || worker.claim(&claim_key))
                .await
                .expect("claiming does not panic")
                .map_err(|e| fail(e.to_string(), vec![]))?;
            if claim.is_some()
                && let Some(output) = self.lookup(&key).await?
            {
                return Ok((key, output));
            }
            claim
        };

        let ctx = Arc::new(StepContext {
            vertex: self.vertex,
            events: if vertex.name.is_some() {
                self.events.clone()
            } else {
                None
            },
            started,
            cancel: self.cancel.clone(),
            tail: Mutex::new(LogTail::default()),
        });
        // Exec steps wait for a slot (the permit is held until the step ends).
        let _slot = match vertex.op {
            Op::Exec(_) => Some(
                self.exec_slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed"),
            ),
            _ => None,
        };
        if self.cancel.load(Ordering::Relaxed) {
            return Err(None);
        }
        let worker = self.worker.clone();
        let op = vertex.op.clone();
        let step_ctx = ctx.clone();
        let executed =
            tokio::task::spawn_blocking(move || worker.execute(&op, &input_outputs, &step_ctx))
                .await
                .expect("worker does not panic");
        match executed {
            Ok(output) => {
                self.cache
                    .put(&key, &output)
                    .map_err(|e| Some(SolveError::Solver(e)))?;
                self.send(Event::Done {
                    vertex: self.vertex,
                    elapsed: started.elapsed(),
                });
                Ok((key, Arc::new(output)))
            }
            Err(e) => {
                let tail = ctx.tail.lock().expect("log tail").take();
                Err(fail(e.to_string(), tail))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{ExecOp, LocalSource, NetworkMode, OutputLayer};
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A worker that records what it executes. Each exec "adds a layer" named after its command.
    struct FakeWorker {
        context: PathBuf,
        executed: Mutex<Vec<String>>,
        running: AtomicUsize,
        max_running: AtomicUsize,
    }

    impl Worker for FakeWorker {
        fn local_root(&self, _name: &str) -> Result<PathBuf, BoxError> {
            Ok(self.context.clone())
        }
        fn fetch_http(&self, _source: &HttpSource) -> Result<(PathBuf, Digest), BoxError> {
            Err("no network in this test".into())
        }
        fn execute(
            &self,
            op: &Op,
            inputs: &[Arc<Output>],
            ctx: &StepContext,
        ) -> Result<Output, BoxError> {
            let Op::Exec(exec) = op else {
                return Ok(Output::default());
            };
            let cmd = exec.args.join(" ");
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.executed.lock().unwrap().push(cmd.clone());
            ctx.log(Stream::Stdout, format!("ran {cmd}\n").as_bytes());
            if cmd == "fail" {
                return Err("exit code: 3".into());
            }
            let mut layers = inputs[0].layers.clone();
            layers.push(OutputLayer {
                diff_id: Digest::of(cmd.as_bytes()),
                digest: Digest::of(cmd.as_bytes()),
                size: 1,
                media_type: "x".into(),
                created: None,
            });
            Ok(Output {
                layers,
                local: None,
            })
        }
        fn is_usable(&self, _output: &Output) -> bool {
            true
        }
    }

    fn exec(cmd: &str) -> Op {
        Op::Exec(ExecOp {
            args: vec![cmd.into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            network: NetworkMode::Host,
            inline_files: vec![],
            mounts: vec![],
            platform: None,
        })
    }

    fn setup() -> (tempfile::TempDir, Arc<FakeWorker>, Arc<CacheIndex>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ctx")).unwrap();
        std::fs::write(dir.path().join("ctx/a"), "1").unwrap();
        let worker = Arc::new(FakeWorker {
            context: dir.path().join("ctx"),
            executed: Mutex::new(vec![]),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
        });
        let cache = Arc::new(CacheIndex::open(&dir.path().join("cache.db")).unwrap());
        (dir, worker, cache)
    }

    /// A worker whose claims find that "another process" just finished the step: the claim
    /// records an output for the key before it is granted.
    struct RacingWorker {
        inner: FakeWorker,
        cache: Arc<CacheIndex>,
        claimed: Mutex<Vec<Digest>>,
    }

    impl Worker for RacingWorker {
        fn local_root(&self, name: &str) -> Result<PathBuf, BoxError> {
            self.inner.local_root(name)
        }
        fn fetch_http(&self, source: &HttpSource) -> Result<(PathBuf, Digest), BoxError> {
            self.inner.fetch_http(source)
        }
        fn execute(
            &self,
            op: &Op,
            inputs: &[Arc<Output>],
            ctx: &StepContext,
        ) -> Result<Output, BoxError> {
            self.inner.execute(op, inputs, ctx)
        }
        fn is_usable(&self, output: &Output) -> bool {
            self.inner.is_usable(output)
        }
        fn claim(&self, key: &Digest) -> Result<Option<Claim>, BoxError> {
            self.claimed.lock().unwrap().push(key.clone());
            let theirs = Output {
                layers: vec![OutputLayer {
                    diff_id: Digest::of(b"theirs"),
                    digest: Digest::of(b"theirs"),
                    size: 1,
                    media_type: "x".into(),
                    created: None,
                }],
                local: None,
            };
            self.cache.put(key, &theirs).unwrap();
            Ok(Some(Box::new(())))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_step_another_process_finished_while_we_waited_is_not_run() {
        let (_dir, inner, cache) = setup();
        let inner = Arc::into_inner(inner).unwrap();
        let worker = Arc::new(RacingWorker {
            inner,
            cache: cache.clone(),
            claimed: Mutex::new(vec![]),
        });
        let mut g = Graph::new();
        let base = g.add(Op::Scratch, vec![], None);
        let step = g.add(exec("a"), vec![base], Some("a".into()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let solver = Solver::new(worker.clone(), cache.clone(), Some(tx));
        let out = solver.solve(Arc::new(g.clone()), &[step]).await.unwrap();
        drop(solver);
        assert_eq!(out[&step].layers[0].diff_id, Digest::of(b"theirs"));
        assert!(worker.inner.executed.lock().unwrap().is_empty());
        assert_eq!(
            worker.claimed.lock().unwrap().len(),
            1,
            "only the exec step"
        );
        let mut cached = false;
        while let Some(event) = rx.recv().await {
            cached |= matches!(event, Event::Cached { .. });
        }
        assert!(cached, "the step is reported as cached");
        // --no-cache neither claims nor looks up: the step runs.
        let solver = Solver::new(worker.clone(), cache, None).without_cache_lookups();
        solver.solve(Arc::new(g), &[step]).await.unwrap();
        assert_eq!(worker.inner.executed.lock().unwrap().len(), 1);
        assert_eq!(worker.claimed.lock().unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn imported_records_are_used_and_keys_reported() {
        let (dir, worker, cache) = setup();
        let mut g = Graph::new();
        let base = g.add(Op::Scratch, vec![], None);
        let a = g.add(exec("a"), vec![base], Some("a".into()));
        let b = g.add(exec("b"), vec![a], Some("b".into()));
        let g = Arc::new(g);
        // Another machine built `a` and `b`: its keys are the same as ours.
        let (_other_dir, other_worker, other_cache) = setup();
        let other = Solver::new(other_worker.clone(), other_cache.clone(), None);
        let theirs = other.solve(g.clone(), &[b]).await.unwrap();
        let keys = other.keys();
        assert_eq!(keys.len(), 3, "scratch, a and b");
        let imported: HashMap<Digest, Output> = [a, b]
            .iter()
            .map(|v| (keys[v].clone(), (*theirs[v]).clone()))
            .collect();
        let plan = Solver::new(worker.clone(), cache.clone(), None)
            .with_imported(imported.clone())
            .plan(&g, &[b])
            .unwrap();
        assert_eq!(plan[&b].cached, Some(true), "graph sees imported records");
        let solver = Solver::new(worker.clone(), cache.clone(), None).with_imported(imported);
        let ours = solver.solve(g.clone(), &[b]).await.unwrap();
        assert!(worker.executed.lock().unwrap().is_empty(), "nothing ran");
        assert_eq!(ours[&b].layers, theirs[&b].layers);
        assert_eq!(solver.keys(), keys);
        // The records used are in our index now: found without importing again.
        let again = Solver::new(worker.clone(), cache.clone(), None);
        again.solve(g, &[b]).await.unwrap();
        assert!(worker.executed.lock().unwrap().is_empty());
        drop(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_bound_concurrent_exec_steps() {
        let (_dir, worker, cache) = setup();
        let mut g = Graph::new();
        let base = g.add(Op::Scratch, vec![], None);
        let steps: Vec<VertexId> = ["a", "b", "c"]
            .iter()
            .map(|c| g.add(exec(c), vec![base], Some(c.to_string())))
            .collect();
        let solver = Solver::new(worker.clone(), cache, None).with_jobs(1);
        solver.solve(Arc::new(g), &steps).await.unwrap();
        assert_eq!(worker.executed.lock().unwrap().len(), 3);
        assert_eq!(worker.max_running.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn independent_steps_run_in_parallel_and_rebuilds_hit_the_cache() {
        let (_dir, worker, cache) = setup();
        let mut g = Graph::new();
        let base = g.add(Op::Scratch, vec![], None);
        let a = g.add(exec("a"), vec![base], Some("a".into()));
        let b = g.add(exec("b"), vec![base], Some("b".into()));
        let g = Arc::new(g);

        let solver = Solver::new(worker.clone(), cache.clone(), None).with_jobs(2);
        let out = solver.solve(g.clone(), &[a, b]).await.unwrap();
        assert_eq!(out[&a].layers.len(), 1);
        assert_eq!(out.len(), 3, "scratch, a and b");
        assert_eq!(
            worker.max_running.load(Ordering::SeqCst),
            2,
            "a and b overlap"
        );

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let solver = Solver::new(worker.clone(), cache, Some(tx));
        let again = solver.solve(g, &[a, b]).await.unwrap();
        assert_eq!(again, out);
        assert_eq!(
            worker.executed.lock().unwrap().len(),
            2,
            "nothing ran twice"
        );
        drop(solver);
        let mut cached = 0;
        while let Some(event) = rx.recv().await {
            if matches!(event, Event::Cached { .. }) {
                cached += 1;
            }
        }
        assert_eq!(cached, 2);
    }

    /// scratch → exec "first"; the context's file `a`; exec "after" over both (a stand-in for
    /// a COPY, which takes the local source as a second input). Returns the four vertices.
    fn first_then_copy() -> (Graph, [VertexId; 4]) {
        let mut g = Graph::new();
        let base = g.add(Op::Scratch, vec![], None);
        let first = g.add(exec("first"), vec![base], None);
        let local = g.add(
            Op::Local(LocalSource {
                name: "context".into(),
                include: vec!["a".into()],
                ..LocalSource::default()
            }),
            vec![],
            None,
        );
        let after = g.add(exec("after"), vec![first, local], None);
        (g, [base, first, local, after])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plan_says_what_solve_does() {
        let (dir, worker, cache) = setup();
        let (g, [base, first, local, after]) = first_then_copy();
        let g = Arc::new(g);
        let solver = |salt: Option<&str>| {
            Solver::new(worker.clone(), cache.clone(), None).with_key_salt(salt.map(String::from))
        };
        let cached = |salt: Option<&str>| {
            let plan = solver(salt).plan(&g, &[after]).unwrap();
            assert_eq!(plan[&base].cached, None, "sources are never looked up");
            assert!(plan[&local].key.is_some(), "the context is hashed");
            (plan[&first].cached, plan[&after].cached)
        };
        assert_eq!(cached(None), (Some(false), Some(false)));
        solver(None).solve(g.clone(), &[after]).await.unwrap();
        assert_eq!(cached(None), (Some(true), Some(true)));
        // Keyed as the solve keys them: another salt, or a changed file, misses.
        assert_eq!(cached(Some("1")), (Some(false), Some(false)));
        std::fs::write(dir.path().join("ctx/a"), "2").unwrap();
        assert_eq!(cached(None), (Some(true), Some(false)));
        let plan = solver(None)
            .without_cache_lookups()
            .plan(&g, &[after])
            .unwrap();
        assert_eq!(
            plan[&first].cached,
            Some(false),
            "--no-cache runs everything"
        );
        assert_eq!(
            *worker.executed.lock().unwrap(),
            ["first", "after"],
            "plan runs nothing"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changing_local_content_reruns_only_dependents() {
        let (dir, worker, cache) = setup();
        let (g, [_, _, _, after]) = first_then_copy();
        let g = Arc::new(g);
        let solve = || async {
            Solver::new(worker.clone(), cache.clone(), None)
                .solve(g.clone(), &[after])
                .await
                .unwrap()
        };
        solve().await;
        solve().await;
        assert_eq!(*worker.executed.lock().unwrap(), ["first", "after"]);
        std::fs::write(dir.path().join("ctx/a"), "2").unwrap();
        solve().await;
        assert_eq!(
            *worker.executed.lock().unwrap(),
            ["first", "after", "after"]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failure_reports_the_step_and_its_output() {
        let (_dir, worker, cache) = setup();
        let mut g = Graph::new();
        let base = g.add(Op::Scratch, vec![], None);
        let bad = g.add(exec("fail"), vec![base], Some("bad".into()));
        let after = g.add(exec("never"), vec![bad], Some("after".into()));
        let err = Solver::new(worker.clone(), cache, None)
            .solve(Arc::new(g), &[after])
            .await
            .unwrap_err();
        match err {
            SolveError::Step {
                vertex,
                message,
                log_tail,
            } => {
                assert_eq!(vertex, bad);
                assert_eq!(message, "exit code: 3");
                assert_eq!(log_tail, ["ran fail"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            !worker
                .executed
                .lock()
                .unwrap()
                .contains(&"never".to_string())
        );
    }
}
