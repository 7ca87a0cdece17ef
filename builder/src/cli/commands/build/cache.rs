//! `--cache-from` and `--cache-to` in a build: importing before the solve, exporting after
//! the outputs (see [`crate::remotecache`]).

use super::*;
use crate::remotecache::record::encode_inline;
use rbuild_solver::summary::Summary;

use crate::remotecache::spec::{
    CacheFrom, CacheTo, Location, Mode as CacheMode, parse_cache_from, parse_cache_to,
};

/// The caches a build reads and writes.
pub(super) struct Caches {
    /// `--cache-from`, in order of preference.
    pub(super) from: Vec<CacheFrom>,
    /// `--cache-to`.
    pub(super) to: Vec<CacheTo>,
}

impl Caches {
    /// Parses the flags.
    pub(super) fn parse(args: &BuildArgs) -> Result<Caches> {
        Ok(Caches {
            from: args
                .cache_from
                .iter()
                .map(|s| parse_cache_from(s).map_err(|e| anyhow!(e)))
                .collect::<Result<_>>()?,
            to: args
                .cache_to
                .iter()
                .map(|s| parse_cache_to(s).map_err(|e| anyhow!(e)))
                .collect::<Result<_>>()?,
        })
    }

    /// Reports why the steps that ran missed the cache: every reason with `--explain`, the
    /// first of each when a cache was imported (and nothing otherwise); and keeps them for
    /// `rbuild explain --last`.
    pub(super) fn report_misses(
        &self,
        session: &Session,
        state: &State,
        misses: &[rbuild_solver::scheduler::Miss],
        explain: bool,
    ) {
        let path = state.root.join(LAST_MISSES);
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let saved = serde_json::to_vec_pretty(misses).expect("misses serialize");
        if std::fs::write(&tmp, saved)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .is_err()
        {
            let _ = std::fs::remove_file(&tmp);
        }
        if misses.is_empty() || (!explain && self.from.is_empty()) {
            return;
        }
        let started = Instant::now();
        let lines: Vec<String> = misses
            .iter()
            .map(|m| match explain {
                true => format!("missed {}: {}", m.name, m.reasons.join("; ")),
                false => format!("missed {}: {}", m.name, m.reasons[0]),
            })
            .collect();
        session.step("why steps missed the cache", &lines, started);
    }

    /// Whether the image carries its cache (`--cache-to type=inline`).
    pub(super) fn inline(&self) -> bool {
        self.to.iter().any(|t| t.location == Location::Inline)
    }

    /// The inline cache of `build`'s image: the records of its own steps.
    pub(super) fn inline_record(
        &self,
        build: &Build,
        solved: &Solved,
        keys: &Keys,
    ) -> serde_json::Value {
        let steps = crate::remotecache::steps_to_export(
            &build.graph,
            solved,
            keys,
            &[build.target],
            CacheMode::Min,
        );
        let diff_ids: Vec<rbuild_solver::Digest> = solved[&build.target]
            .layers
            .iter()
            .map(|l| l.diff_id.clone())
            .collect();
        serde_json::to_value(encode_inline(&steps, &diff_ids)).expect("a record serializes")
    }

    /// Imports the `--cache-from` caches: their records, for the solver. What cannot be read
    /// is a warning.
    pub(super) fn import(
        &self,
        session: &Session,
        loaded: &Loaded,
        state: &State,
        registry: &Registry,
        runtime: &tokio::runtime::Runtime,
    ) -> crate::remotecache::Imported {
        if self.from.is_empty() {
            return Default::default();
        }
        let started = Instant::now();
        let imported = crate::remotecache::import(state, registry, runtime.handle(), &self.from);
        let names: Vec<String> = self
            .from
            .iter()
            .map(|c| crate::remotecache::describe(&c.location))
            .collect();
        session.step(
            &format!("importing cache manifest from {}", names.join(", ")),
            &[format!(
                "{} records, {} cache mounts, {} layer blobs known remotely",
                imported.records.len(),
                imported.mounts.len(),
                state.lazy.len()
            )],
            started,
        );
        let warnings: Vec<Diagnostic> = imported
            .warnings
            .iter()
            .map(|w| Diagnostic::warning(&loaded.file, None, w.clone()))
            .collect();
        session.diagnostics(&warnings);
        imported
    }

    /// The `RUN --mount=type=cache` directories the build's steps use (those without
    /// `from=`, whose contents depend on nothing but the steps that wrote them): storage key
    /// and directory.
    fn cache_mounts(export: &Export) -> Vec<(String, std::path::PathBuf)> {
        let graph = &export.builds[0].graph;
        let targets: Vec<rbuild_solver::VertexId> =
            export.builds.iter().map(|b| b.target).collect();
        let mut out: Vec<(String, std::path::PathBuf)> = Vec::new();
        for v in graph.needed_for(&targets) {
            let rbuild_solver::Op::Exec(exec) = &graph.vertex(v).op else {
                continue;
            };
            for m in &exec.mounts {
                if let rbuild_solver::MountKind::Cache {
                    id, input: None, ..
                } = &m.kind
                {
                    let key = crate::worker::mounts::cache_key(id, None);
                    let dir = export.state.cache_mounts_dir().join(&key).join("0");
                    if dir.is_dir() && !out.iter().any(|(k, _)| *k == key) {
                        out.push((key, dir));
                    }
                }
            }
        }
        out
    }

    /// Exports the `--cache-to` caches of a finished build. A failed export is a warning
    /// unless `ignore-error=false` asked for it to fail the build.
    pub(super) fn export(&self, export: &Export, loaded: &Loaded, keys: &Keys) -> Result<()> {
        let graph = &export.builds[0].graph;
        let targets: Vec<rbuild_solver::VertexId> =
            export.builds.iter().map(|b| b.target).collect();
        for to in self.to.iter().filter(|t| t.location != Location::Inline) {
            let started = Instant::now();
            let name = crate::remotecache::describe(&to.location);
            let steps =
                crate::remotecache::steps_to_export(graph, export.solved, keys, &targets, to.mode);
            let contents = crate::remotecache::Contents {
                summaries: summaries_of(export, &steps),
                steps,
                mounts: match to.cache_mounts {
                    true => Caches::cache_mounts(export),
                    false => vec![],
                },
            };
            let report = |line: String| {
                if export.session.mode == Mode::Plain {
                    eprintln!("{line}");
                }
            };
            let result = crate::remotecache::export(
                export.state,
                export.registry,
                export.runtime.handle(),
                to,
                &contents,
                &report,
            );
            match result {
                Ok(written) => {
                    let what = if written.unchanged {
                        "unchanged"
                    } else {
                        "done"
                    };
                    export.session.step(
                        &format!("exporting cache to {name}"),
                        &[
                            "preparing build cache for export done".to_string(),
                            format!(
                                "writing cache manifest {} ({} records, {} layers) {what}",
                                written.digest, written.records, written.blobs
                            ),
                        ],
                        started,
                    );
                }
                Err(e) if to.fail_on_error => {
                    return Err(anyhow!(e).context(format!("exporting the cache to {name}")));
                }
                Err(e) => export.session.diagnostics(&[Diagnostic::warning(
                    &loaded.file,
                    None,
                    format!("cache not exported to {name}: {}", crate::errors::chain(&e)),
                )]),
            }
        }
        Ok(())
    }
}

/// What went into the keys of `steps` and of the build's local sources, for the record.
fn summaries_of(
    export: &Export,
    steps: &[crate::remotecache::record::Exported],
) -> std::collections::BTreeMap<rbuild_solver::Digest, Summary> {
    export
        .summaries
        .values()
        .filter(|(key, s)| s.kind == "local" || steps.iter().any(|step| step.key == key))
        .map(|(key, s)| (key.clone(), (**s).clone()))
        .collect()
}

/// What went into each solved vertex's key.
pub(super) use rbuild_solver::scheduler::Summaries;

/// The cache key of every solved vertex.
pub(super) type Keys = HashMap<rbuild_solver::VertexId, rbuild_solver::Digest>;
