//! The scheduler's tests, with fake workers.

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
    fn fetch_git(&self, _source: &crate::ops::GitSource) -> Result<(PathBuf, Digest), BoxError> {
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
        limits: Default::default(),
        insecure: false,
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
    fn fetch_git(&self, source: &crate::ops::GitSource) -> Result<(PathBuf, Digest), BoxError> {
        self.inner.fetch_git(source)
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
async fn a_step_only_cached_consumers_need_does_not_run() {
    let (_dir, worker, cache) = setup();
    let mut g = Graph::new();
    let base = g.add(Op::Scratch, vec![], None);
    let builder = g.add(exec("compile"), vec![base], Some("compile".into()));
    let first = g.add(exec("a"), vec![base], Some("a".into()));
    // The final step reads the builder's result (as COPY --from does).
    let last = g.add(exec("f"), vec![first, builder], Some("f".into()));
    let g = Arc::new(g);
    let (_other_dir, other_worker, other_cache) = setup();
    let other = Solver::new(other_worker, other_cache, None);
    let theirs = other.solve(g.clone(), &[last]).await.unwrap();
    let keys = other.keys();
    // An inline cache: the final stage's steps only.
    let imported: HashMap<Digest, Output> = [first, last]
        .iter()
        .map(|v| (keys[v].clone(), (*theirs[v]).clone()))
        .collect();
    let solver = Solver::new(worker.clone(), cache.clone(), None).with_imported(imported.clone());
    let ours = solver.solve(g.clone(), &[last]).await.unwrap();
    assert!(
        worker.executed.lock().unwrap().is_empty(),
        "the builder step is not needed: {:?}",
        worker.executed.lock().unwrap()
    );
    assert!(ours.contains_key(&first) && !ours.contains_key(&builder));
    assert_eq!(
        solver.keys()[&builder],
        keys[&builder],
        "its key is known all the same"
    );
    // Asked for as a target, it runs.
    let solver = Solver::new(worker.clone(), cache, None).with_imported(imported);
    solver.solve(g, &[last, builder]).await.unwrap();
    assert_eq!(*worker.executed.lock().unwrap(), ["compile"]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_are_explained_by_the_nearest_earlier_build() {
    let (dir, worker, cache) = setup();
    let mut g = Graph::new();
    let base = g.add(Op::Scratch, vec![], None);
    let local = g.add(
        Op::Local(LocalSource {
            name: "context".into(),
            include: vec!["a".into()],
            ..LocalSource::default()
        }),
        vec![],
        None,
    );
    let step = g.add(
        exec("cat a"),
        vec![base, local],
        Some("[2/2] COPY a".into()),
    );
    let g = Arc::new(g);
    let first = Solver::new(worker.clone(), cache.clone(), None);
    first.solve(g.clone(), &[step]).await.unwrap();
    let misses = first.explain_misses(&g).unwrap();
    assert_eq!(misses.len(), 1);
    assert_eq!(
        misses[0].nearest, None,
        "the first build has nothing to compare with"
    );
    std::fs::write(dir.path().join("ctx/a"), "2").unwrap();
    let second = Solver::new(worker.clone(), cache.clone(), None);
    second.solve(g.clone(), &[step]).await.unwrap();
    let misses = second.explain_misses(&g).unwrap();
    assert_eq!(misses.len(), 1, "{misses:?}");
    assert_eq!(misses[0].name, "[2/2] COPY a");
    assert_eq!(misses[0].reasons, ["context file a: content changed"]);
    // A cached build explains nothing.
    let third = Solver::new(worker.clone(), cache, None);
    third.solve(g.clone(), &[step]).await.unwrap();
    assert!(third.explain_misses(&g).unwrap().is_empty());
}
