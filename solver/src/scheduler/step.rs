//! One vertex's task in a solve, and how vertices talk: each publishes its cache key as soon
//! as it knows it (its inputs' keys suffice), and produces its output only on demand.
//!
//! A vertex whose key the cache has takes its output from there. One the cache lacks waits
//! until a consumer demands its output (a consumer that has to run, or the solve, for a
//! target) or every consumer has released it (they were all cached), and then runs or ends
//! without an output. So a step runs only if something that runs needs it: a final stage
//! found in a cache does not need its builder stage (BuildKit's lazy solve does the same).
//! A vertex with an output demands its first input's (the root filesystem it extends), so
//! every step of a target's chain has an output, which the image's history needs.

use super::*;
use tokio::sync::watch;

/// What a vertex's consumers see of it.
#[derive(Clone)]
pub(super) struct Link {
    /// Its key: `None` until known, `Some(None)` if it failed.
    pub(super) key: watch::Receiver<Option<Option<Digest>>>,
    /// Its output: `None` until produced, `Some(None)` if it failed or was not needed.
    pub(super) output: watch::Receiver<Option<Option<Arc<Output>>>>,
    /// Where consumers demand or release its output.
    pub(super) demand: Arc<watch::Sender<Demand>>,
}

/// What a vertex's consumers decided so far.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Demand {
    /// Someone needs the output.
    pub(super) wanted: bool,
    /// How many consumers decided they do not.
    pub(super) released: usize,
}

/// The sending ends of a vertex's [`Link`].
pub(super) struct Publisher {
    pub(super) key: watch::Sender<Option<Option<Digest>>>,
    pub(super) output: watch::Sender<Option<Option<Arc<Output>>>>,
    pub(super) demand: watch::Receiver<Demand>,
    /// How many consumers must release the output before it is known to be unneeded.
    pub(super) consumers: usize,
}

/// A pair of ends for one vertex; `wanted` for a target.
pub(super) fn link(consumers: usize, wanted: bool) -> (Publisher, Link) {
    let (key_tx, key_rx) = watch::channel(None);
    let (out_tx, out_rx) = watch::channel(None);
    let (demand_tx, demand_rx) = watch::channel(Demand {
        wanted,
        released: 0,
    });
    (
        Publisher {
            key: key_tx,
            output: out_tx,
            demand: demand_rx,
            consumers,
        },
        Link {
            key: key_rx,
            output: out_rx,
            demand: Arc::new(demand_tx),
        },
    )
}

/// A consumer's hold on its inputs: released (as not needed) when dropped unless demanded.
struct Inputs {
    links: Vec<Link>,
    decided: bool,
}

impl Inputs {
    /// Demands the outputs of the inputs `which` selects and releases the others.
    fn decide(&mut self, which: impl Fn(usize) -> bool) {
        if self.decided {
            return;
        }
        self.decided = true;
        // An input listed twice (two mounts of one stage) is released once.
        let mut seen: Vec<&Arc<watch::Sender<Demand>>> = Vec::new();
        for (i, link) in self.links.iter().enumerate() {
            if which(i) {
                link.demand.send_modify(|d| d.wanted = true);
            } else if !seen.iter().any(|s| Arc::ptr_eq(s, &link.demand)) {
                link.demand.send_modify(|d| d.released += 1);
            }
            seen.push(&link.demand);
        }
    }

    /// Waits for the outputs of all inputs (after demanding them).
    async fn outputs(&mut self) -> Result<Vec<Arc<Output>>, Option<SolveError>> {
        self.decide(|_| true);
        let mut outputs = Vec::with_capacity(self.links.len());
        for link in &mut self.links {
            let output = link
                .output
                .wait_for(|o| o.is_some())
                .await
                .map_err(|_| None)?
                .clone()
                .flatten()
                .ok_or(None)?;
            outputs.push(output);
        }
        Ok(outputs)
    }
}

impl Drop for Inputs {
    fn drop(&mut self) {
        self.decide(|_| false);
    }
}

pub(super) struct Step<W: Worker> {
    pub(super) worker: Arc<W>,
    pub(super) cache: Arc<CacheIndex>,
    pub(super) events: Option<Sender>,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) graph: Arc<Graph>,
    pub(super) vertex: VertexId,
    pub(super) no_cache: bool,
    pub(super) exec_slots: Arc<tokio::sync::Semaphore>,
    pub(super) stats: Option<Arc<crate::statcache::StatCache>>,
    pub(super) salt: Option<Arc<str>>,
    pub(super) imported: Arc<HashMap<Digest, Output>>,
    pub(super) summaries: Arc<Mutex<Summaries>>,
    pub(super) ran: Arc<Mutex<Vec<VertexId>>>,
}

/// How a vertex ended: its key, and its output unless it was not needed.
pub(super) type Outcome = (Digest, Option<Arc<Output>>);

impl<W: Worker> Step<W> {
    /// Keeps what went into `key` for this solve (see [`Solver::summaries`]).
    fn summarize(
        &self,
        key: &Digest,
        op: &Op,
        inputs: &[Digest],
        content: Option<&Digest>,
        files: Vec<String>,
    ) -> Arc<Summary> {
        let vertex = self.graph.vertex(self.vertex);
        let op_json = serde_json::to_value(op).expect("ops serialize");
        let kind = op_json["op"].as_str().unwrap_or("unknown").to_string();
        let layered = !matches!(op, Op::Scratch | Op::Local(_) | Op::Http(_) | Op::Git(_));
        let summary = Arc::new(Summary {
            kind,
            name: vertex.name.clone(),
            stage: vertex.stage.clone(),
            op: op_json,
            inputs: inputs.to_vec(),
            content: content.cloned(),
            salt: if layered {
                self.salt.as_deref().map(str::to_string)
            } else {
                None
            },
            files,
        });
        self.summaries
            .lock()
            .expect("summaries")
            .insert(self.vertex, (key.clone(), summary.clone()));
        summary
    }

    fn send(&self, event: Event) {
        if self.graph.vertex(self.vertex).name.is_some()
            && let Some(events) = &self.events
        {
            let _ = events.send(event);
        }
    }

    fn started(&self) {
        if let Some(name) = &self.graph.vertex(self.vertex).name {
            self.send(Event::Started {
                vertex: self.vertex,
                name: name.clone(),
            });
        }
    }

    fn fail(&self, started: Instant, message: String, log_tail: Vec<String>) -> Option<SolveError> {
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
    }

    /// The usable cached output for `key`, from the index or else from the imported records,
    /// unless the cache is off for this step.
    /// Records a phase of this step, from `start` to now, in the trace (if one is kept).
    fn phase(&self, name: &'static str, start: Instant) {
        if crate::trace::enabled() {
            let vertex = self.graph.vertex(self.vertex);
            let label = vertex
                .name
                .clone()
                .unwrap_or_else(|| format!("{} {}", vertex.op.kind(), self.vertex.index()));
            crate::trace::interval(self.vertex.index(), &label, name, start);
        }
    }

    async fn lookup(&self, key: &Digest) -> Result<Option<Arc<Output>>, Option<SolveError>> {
        if self.no_cache {
            return Ok(None);
        }
        let local = self
            .cache
            .get(key)
            .map_err(|e| Some(SolveError::Solver(e)))?;
        if let Some(output) = local
            && self.usable(&output).await
        {
            return Ok(Some(Arc::new(output)));
        }
        if let Some(output) = self.imported.get(key)
            && self.usable(output).await
        {
            self.cache
                .put(key, output)
                .map_err(|e| Some(SolveError::Solver(e)))?;
            return Ok(Some(Arc::new(output.clone())));
        }
        Ok(None)
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

    /// Runs one vertex: publishes its key, then its output (from the cache, or made when
    /// demanded). `Err(None)` means an input failed (the input reports the cause).
    pub(super) async fn run(
        self,
        links: Vec<Link>,
        publisher: &Publisher,
    ) -> Result<Outcome, Option<SolveError>> {
        let mut inputs = Inputs {
            links,
            decided: false,
        };
        let mut input_keys = Vec::with_capacity(inputs.links.len());
        for link in &mut inputs.links {
            let key = link
                .key
                .wait_for(|k| k.is_some())
                .await
                .map_err(|_| None)?
                .clone()
                .flatten()
                .ok_or(None)?;
            input_keys.push(key);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(None);
        }
        let vertex = self.graph.vertex(self.vertex).clone();
        if let Some(source) = self.source(&vertex.op, &input_keys).await? {
            return Ok(source);
        }
        let key = cachekey::of_vertex(&vertex.op, &input_keys, None, self.salt.as_deref());
        let _ = publisher.key.send(Some(Some(key.clone())));
        let summary = self.summarize(&key, &vertex.op, &input_keys, None, vec![]);
        let looking = Instant::now();
        let found = self.lookup(&key).await?;
        self.phase("cache lookup", looking);
        if let Some(output) = found {
            // Its root filesystem's chain is wanted (for the image's history), nothing else.
            inputs.decide(|i| i == 0);
            self.started();
            self.send(Event::Cached {
                vertex: self.vertex,
            });
            return Ok((key, Some(output)));
        }
        // Not cached: run only if someone needs the output.
        let mut demand = publisher.demand.clone();
        let wanted = demand
            .wait_for(|d| d.wanted || d.released >= publisher.consumers)
            .await
            .map(|d| d.wanted)
            .unwrap_or(false);
        if !wanted {
            return Ok((key, None));
        }
        let waiting = Instant::now();
        let input_outputs = inputs.outputs().await?;
        self.phase("wait for inputs", waiting);
        if self.cancel.load(Ordering::Relaxed) {
            return Err(None);
        }
        self.started();
        let output = self.execute(&vertex.op, &key, input_outputs).await?;
        // Kept for explaining later misses of this step.
        self.cache
            .put_summary(&key, &summary)
            .map_err(|e| Some(SolveError::Solver(e)))?;
        Ok((key, Some(output)))
    }

    /// For a source that is not worth caching (scratch, and local directories and downloads,
    /// whose "execution" is hashing their content, which is also how their key is computed):
    /// its key and output.
    async fn source(
        &self,
        op: &Op,
        input_keys: &[Digest],
    ) -> Result<Option<Outcome>, Option<SolveError>> {
        let started = Instant::now();
        match op {
            Op::Scratch => {
                let key = cachekey::of_vertex(op, input_keys, None, None);
                Ok(Some((key, Some(Arc::new(Output::default())))))
            }
            Op::Local(_) | Op::Http(_) | Op::Git(_) => {
                self.started();
                let worker = self.worker.clone();
                let op = op.clone();
                let stats = self.stats.clone();
                let hashed = tokio::task::spawn_blocking(move || match &op {
                    Op::Local(local) => {
                        let root = worker.local_root(&local.name)?;
                        let stats = stats.as_deref().filter(|s| s.root() == root);
                        let mut files = Vec::new();
                        let digest =
                            contenthash::hash_local_listed(&root, local, stats, Some(&mut files))?;
                        Ok::<_, BoxError>((root, digest, op, files))
                    }
                    Op::Http(http) => {
                        let (root, digest) = worker.fetch_http(http)?;
                        Ok((root, digest, op, vec![]))
                    }
                    Op::Git(git) => {
                        let (root, digest) = worker.fetch_git(git)?;
                        Ok((root, digest, op, vec![]))
                    }
                    _ => unreachable!("only sources are hashed here"),
                })
                .await
                .expect("hashing does not panic");
                let (root, content, op, files) =
                    hashed.map_err(|e| self.fail(started, e.to_string(), vec![]))?;
                self.phase("hash source", started);
                let key = cachekey::of_vertex(&op, input_keys, Some(&content), None);
                let summary = self.summarize(&key, &op, input_keys, Some(&content), files);
                self.cache
                    .put_summary(&key, &summary)
                    .map_err(|e| Some(SolveError::Solver(e)))?;
                self.send(Event::Done {
                    vertex: self.vertex,
                    elapsed: started.elapsed(),
                });
                let output = Output {
                    layers: vec![],
                    local: Some(root),
                };
                Ok(Some((key, Some(Arc::new(output)))))
            }
            _ => Ok(None),
        }
    }

    /// Runs the op (after claiming its key, so concurrent builds run it once) and records the
    /// result.
    async fn execute(
        &self,
        op: &Op,
        key: &Digest,
        inputs: Vec<Arc<Output>>,
    ) -> Result<Arc<Output>, Option<SolveError>> {
        let started = Instant::now();
        // Another process may be computing the same step: wait for it, then look again.
        let _claim = if self.no_cache {
            None
        } else {
            let worker = self.worker.clone();
            let claim_key = key.clone();
            let claim = tokio::task::spawn_blocking(move || worker.claim(&claim_key))
                .await
                .expect("claiming does not panic")
                .map_err(|e| self.fail(started, e.to_string(), vec![]))?;
            self.phase("claim", started);
            if claim.is_some()
                && let Some(output) = self.lookup(key).await?
            {
                self.send(Event::Cached {
                    vertex: self.vertex,
                });
                return Ok(output);
            }
            claim
        };
        let named = self.graph.vertex(self.vertex).name.is_some();
        let ctx = Arc::new(StepContext {
            vertex: self.vertex,
            events: if named { self.events.clone() } else { None },
            started,
            cancel: self.cancel.clone(),
            tail: Mutex::new(LogTail::default()),
        });
        // Exec steps wait for a slot (the permit is held until the step ends).
        let queued = Instant::now();
        let _slot = match op {
            Op::Exec(_) => Some(
                self.exec_slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed"),
            ),
            _ => None,
        };
        if matches!(op, Op::Exec(_)) {
            self.phase("wait for an exec slot", queued);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(None);
        }
        let worker = self.worker.clone();
        let run_op = op.clone();
        let step_ctx = ctx.clone();
        let executing = Instant::now();
        let executed =
            tokio::task::spawn_blocking(move || worker.execute(&run_op, &inputs, &step_ctx))
                .await
                .expect("worker does not panic");
        self.phase("execute", executing);
        match executed {
            Ok(output) => {
                let recording = Instant::now();
                self.cache
                    .put(key, &output)
                    .map_err(|e| Some(SolveError::Solver(e)))?;
                self.phase("record in the cache", recording);
                self.ran.lock().expect("ran").push(self.vertex);
                self.send(Event::Done {
                    vertex: self.vertex,
                    elapsed: started.elapsed(),
                });
                Ok(Arc::new(output))
            }
            // Stopped because the solve was cancelled: not this step's failure.
            Err(_) if self.cancel.load(Ordering::Relaxed) => {
                self.send(Event::Canceled {
                    vertex: self.vertex,
                    elapsed: started.elapsed(),
                });
                Err(None)
            }
            Err(e) => {
                let tail = ctx.tail.lock().expect("log tail").take();
                Err(self.fail(started, e.to_string(), tail))
            }
        }
    }
}
