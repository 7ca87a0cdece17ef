//! The one build pipeline: a [`BuildRequest`] is loaded ([`BuildRequest::load`]: the
//! Dockerfile, the ignore file), lowered ([`BuildRequest::lower`]: per platform, merged into
//! one graph) and handed to a solver set up for it ([`BuildRequest::solver`]: cache switches,
//! `SOURCE_DATE_EPOCH`'s salt, the context's stat cache). `rbuild build` then solves and
//! exports; `rbuild lint` looks at the lowering's findings; `rbuild graph` asks the same
//! solver for a plan. Because all three go through these functions, they cannot disagree on
//! build args, stages or cache keys.

use crate::store::state::State;
use rbuild_frontend::diagnostic::Diagnostic;
use rbuild_frontend::parser::{self, Parsed};
use rbuild_frontend::source::SourceFile;
use rbuild_frontend::{Build, BuildOptions, ImageResolver, Platform, dockerignore, lower};
use rbuild_solver::statcache::StatCache;
use rbuild_solver::{Graph, NetworkMode, Solver, VertexId, Worker};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest Dockerfile rbuild reads (32 MiB): far above any written by hand or generated,
/// and a bound for `-f /dev/zero` or a runaway generator, which would otherwise be read until
/// memory runs out.
pub const MAX_DOCKERFILE_SIZE: u64 = 32 << 20;

/// Why a build request could not be loaded or set up. (Errors in the Dockerfile itself are
/// [`Diagnostic`]s, with their place in the file.)
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The build context cannot be used.
    #[error("build context {}", .path.display())]
    Context {
        /// The context as given.
        path: PathBuf,
        /// Why it cannot be opened.
        #[source]
        source: std::io::Error,
    },
    /// The build context is a file, not a directory.
    #[error("build context {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The Dockerfile cannot be read.
    #[error("failed to read the Dockerfile {}", .path.display())]
    Dockerfile {
        /// The Dockerfile.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The Dockerfile is larger than [`MAX_DOCKERFILE_SIZE`].
    #[error(
        "failed to read the Dockerfile {}: it is larger than {} MiB",
        .0.display(),
        MAX_DOCKERFILE_SIZE >> 20
    )]
    TooLarge(PathBuf),
    /// The `.dockerignore` that applies cannot be read.
    #[error("reading the .dockerignore file")]
    Ignore(#[source] std::io::Error),
    /// The cache index (the context's stat cache).
    #[error(transparent)]
    Cache(#[from] rbuild_solver::Error),
}

/// A pipeline step's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to build, with every option that changes what the Dockerfile lowers to or how its
/// steps are keyed and looked up.
#[derive(Clone, Debug, Default)]
pub struct BuildRequest {
    /// The Dockerfile, as the user named it (messages show it so, without a leading `./`).
    pub dockerfile: PathBuf,
    /// The Dockerfile's name in messages, when not its path (stdin, a URL).
    pub dockerfile_name: Option<String>,
    /// The build context directory (made absolute by [`BuildRequest::load`]).
    pub context: PathBuf,
    /// Build args (see [`parse_build_args`]).
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// The platforms to build for: `[None]` for the build machine's own.
    pub platforms: Vec<Option<Platform>>,
    /// Lower every stage, not only those the target needs (`lint`, and `graph` without a
    /// target).
    pub all_stages: bool,
    /// The network of RUN steps without `--network`.
    pub network: NetworkMode,
    /// The `network.host` entitlement.
    pub allow_network_host: bool,
    /// `--add-host`, `--ulimit`, `--shm-size`, `--cgroup-parent`.
    pub limits: rbuild_solver::ExecLimits,
    /// The `security.insecure` entitlement (`RUN --security=insecure`).
    pub allow_insecure: bool,
    /// `--build-context`s, by name.
    pub named_contexts: BTreeMap<String, rbuild_frontend::convert::NamedContext>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter`: stages whose steps run even when cached.
    pub no_cache_filter: Vec<String>,
    /// `--jobs`.
    pub jobs: Option<usize>,
}

/// A request's inputs, read.
pub struct Loaded {
    /// The Dockerfile.
    pub file: Arc<SourceFile>,
    /// Its syntax tree and diagnostics.
    pub parsed: Parsed,
    /// The `.dockerignore` that applies, if any, and its size.
    pub ignore_file: Option<(PathBuf, u64)>,
    /// Its patterns.
    pub dockerignore: Vec<String>,
    /// How long reading the Dockerfile and the ignore file took.
    pub read_time: (Duration, Duration),
}

/// Build args from `--build-arg` values: `KEY=VALUE`, or `KEY`, which takes its value from
/// the environment (`getenv`) and is left out when unset, as Docker does.
pub fn parse_build_args(
    args: &[String],
    getenv: impl Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for arg in args {
        match arg.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Some(v) = getenv(arg) {
                    out.insert(arg.clone(), v);
                }
            }
        }
    }
    out
}

/// Reads the Dockerfile at `path`, refusing one larger than [`MAX_DOCKERFILE_SIZE`].
pub fn read_dockerfile(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let failed = |source| Error::Dockerfile {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(failed)?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCKERFILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > MAX_DOCKERFILE_SIZE {
        return Err(Error::TooLarge(path.to_path_buf()));
    }
    Ok(bytes)
}

impl BuildRequest {
    /// A request for the Dockerfile `file` (default: `context/Dockerfile`) with the
    /// `--build-arg` values `build_args` (see [`parse_build_args`]; `KEY` alone reads this
    /// process's environment), otherwise the defaults.
    pub fn new(file: Option<&Path>, context: &Path, build_args: &[String]) -> BuildRequest {
        BuildRequest {
            dockerfile: file.map_or_else(|| context.join("Dockerfile"), Path::to_path_buf),
            context: context.to_path_buf(),
            build_args: parse_build_args(build_args, |k| std::env::var(k).ok()),
            platforms: vec![None],
            ..BuildRequest::default()
        }
    }

    /// Checks the context and reads and parses the Dockerfile and the ignore file that
    /// applies. Parse errors are in `parsed`; the caller reports them.
    pub fn load(&mut self) -> Result<Loaded> {
        let given = self.context.clone();
        self.context = given.canonicalize().map_err(|source| Error::Context {
            path: given.clone(),
            source,
        })?;
        if !self.context.is_dir() {
            return Err(Error::NotADirectory(given));
        }
        let started = Instant::now();
        let bytes = read_dockerfile(&self.dockerfile)?;
        let path = self.dockerfile.to_string_lossy();
        let name = self.dockerfile_name.as_deref().unwrap_or(&path);
        let file = SourceFile::new(name.strip_prefix("./").unwrap_or(name), &bytes);
        let read = started.elapsed();
        let started = Instant::now();
        let (ignore_file, dockerignore) =
            match dockerignore::load(&self.context, &self.dockerfile).map_err(Error::Ignore)? {
                Some((path, patterns)) => {
                    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    (Some((path, size)), patterns)
                }
                None => (None, vec![]),
            };
        let read_time = (read, started.elapsed());
        let parsed = parser::parse(&file);
        Ok(Loaded {
            file,
            parsed,
            ignore_file,
            dockerignore,
            read_time,
        })
    }

    /// Lowers the Dockerfile once per platform, with base images from `resolver`; several
    /// platforms share one graph, where what does not depend on the platform is one vertex.
    pub fn lower(
        &self,
        loaded: &Loaded,
        resolver: &dyn ImageResolver,
    ) -> Result<Vec<Build>, Diagnostic> {
        let multi = self.platforms.len() > 1;
        let mut builds = Vec::with_capacity(self.platforms.len());
        for platform in &self.platforms {
            let options = BuildOptions {
                build_args: self.build_args.clone(),
                target: self.target.clone(),
                dockerignore: loaded.dockerignore.clone(),
                all_stages: self.all_stages,
                platform: platform.clone(),
                multi_platform: multi,
                network: self.network,
                allow_network_host: self.allow_network_host,
                limits: self.limits.clone(),
                allow_insecure: self.allow_insecure,
                named_contexts: self.named_contexts.clone(),
            };
            builds.push(lower(&loaded.parsed.dockerfile, &options, resolver)?);
        }
        if multi {
            let mut graph = Graph::new();
            for build in &mut builds {
                build.merge_into(&mut graph);
            }
            for build in &mut builds {
                build.share(&graph);
            }
        }
        Ok(builds)
    }

    /// A solver for this request's `graph`: the cache switches (`--no-cache`,
    /// `--no-cache-filter` by the stages the steps record), `SOURCE_DATE_EPOCH`'s salt, and
    /// the stat cache of the context, which the caller saves after solving.
    pub fn solver<W: Worker>(
        &self,
        worker: Arc<W>,
        state: &State,
        graph: &Graph,
        targets: &[VertexId],
        events: Option<rbuild_solver::progress::Sender>,
    ) -> Result<(Solver<W>, Arc<StatCache>)> {
        let mut solver = Solver::new(worker, state.cache.clone(), events);
        if self.no_cache {
            solver = solver.without_cache_lookups();
        }
        if let Some(jobs) = self.jobs {
            solver = solver.with_jobs(jobs);
        }
        // Layers made with SOURCE_DATE_EPOCH have their file times clamped: not the same layers.
        solver = solver.with_key_salt(crate::units::cache_salt());
        // Context files unchanged since an earlier build are not read again.
        let loading = rbuild_solver::trace::span("build", "load stat cache", || None);
        let stats = Arc::new(state.cache.load_stats(&self.context)?);
        drop(loading);
        solver = solver.with_stat_cache(stats.clone());
        if !self.no_cache_filter.is_empty() {
            let filtered = graph.needed_for(targets).into_iter().filter(|v| {
                graph.vertex(*v).stage.as_deref().is_some_and(|stage| {
                    self.no_cache_filter
                        .iter()
                        .any(|f| f.trim().eq_ignore_ascii_case(stage))
                })
            });
            solver = solver.without_cache_lookups_for(filtered);
        }
        Ok((solver, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_from_values_and_the_environment() {
        let env = |k: &str| (k == "SET").then(|| "from-env".to_string());
        let args = ["A=1", "SET", "UNSET", "B=x=y"].map(String::from);
        let parsed = parse_build_args(&args, env);
        assert_eq!(parsed.get("A").map(String::as_str), Some("1"));
        assert_eq!(parsed.get("SET").map(String::as_str), Some("from-env"));
        assert_eq!(parsed.get("B").map(String::as_str), Some("x=y"));
        assert!(!parsed.contains_key("UNSET"));
    }

    #[test]
    fn dockerfiles_past_the_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Dockerfile");
        std::fs::write(&path, "FROM scratch\n").unwrap();
        assert_eq!(read_dockerfile(&path).unwrap(), b"FROM scratch\n");
        let big = std::fs::File::create(&path).unwrap();
        big.set_len(MAX_DOCKERFILE_SIZE + 1).unwrap();
        let e = read_dockerfile(&path).unwrap_err().to_string();
        assert!(e.contains("larger than 32 MiB"), "{e}");
    }
}
