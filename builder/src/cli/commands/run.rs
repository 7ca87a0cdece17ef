//! `rbuild run [--rm] IMAGE [CMD...]`: runs a command in a new container from an image, in the
//! same sandbox as build steps, passing stdio and the exit code through (like `buildah run`).

use crate::cli::Global;
use crate::registry::Registry;
use crate::registry::resolver::StoreThenRegistry;
use crate::store::layer::ensure_snapshots;
use crate::worker::BuildWorker;
use anyhow::{Context, Result, anyhow, bail};
use rbuild_frontend::ImageResolver;
use rbuild_runner::Upper;
use rbuild_runner::sandbox::{self, Process, Rootfs, Stdio};
use rbuild_solver::ImageSource;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Arguments of `rbuild run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Remove the container's writable layer when it exits
    #[arg(long)]
    pub rm: bool,
    /// The container's network: `default` (a namespace of its own with outbound access, which
    /// cannot reach this machine's loopback), `none` or `host`
    #[arg(long, value_name = "MODE", default_value = "default")]
    pub network: String,
    /// The image (pulled if it is not in the local store)
    pub image: String,
    /// The command, replacing the image's CMD (arguments to its ENTRYPOINT, if any)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// Runs the container; returns its exit code.
pub fn run(global: &Global, args: RunArgs) -> Result<i32> {
    let state = Arc::new(global.state()?);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let registry = Arc::new(Registry::new(global.registries.clone()));
    let resolved = StoreThenRegistry::new(&state, &registry, &runtime)
        .resolve(&args.image, &rbuild_frontend::Platform::host())
        .map_err(|e| anyhow!(e))?;
    let worker = BuildWorker {
        named_dirs: Default::default(),
        state: state.clone(),
        context: std::env::current_dir()?,
        registry,
        runtime: runtime.handle().clone(),
        provided: Default::default(),
        network: Default::default(),
        imported_mounts: Default::default(),
    };
    let output = worker.pull(
        &ImageSource {
            reference: resolved.reference.clone(),
            digest: resolved.digest.clone(),
        },
        &|_, _, _, _| {},
    )?;
    ensure_snapshots(&state, &output.layers)?;

    let config = &resolved.image.config;
    let mut argv: Vec<String> = config.entrypoint.clone().unwrap_or_default();
    if args.cmd.is_empty() {
        argv.extend(config.cmd.clone().unwrap_or_default());
    } else {
        argv.extend(args.cmd.clone());
    }
    if argv.is_empty() {
        bail!("{} has no CMD or ENTRYPOINT; give a command", args.image);
    }
    let (mode, _) = crate::cli::commands::build::network_options(&args.network, &[])?;
    let network = worker.sandbox_network(mode)?;
    let id = rbuild_runner::snapshot::unique_name().replace('-', "");
    let dir = state.root.join("containers").join(&id);
    let upper = Upper {
        fs: dir.join("fs"),
        work: dir.join("work"),
        dir: dir.clone(),
    };
    for d in [&upper.fs, &upper.work, &dir.join("run")] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let layers: Vec<String> = output
        .layers
        .iter()
        .map(|l| l.diff_id.to_string())
        .collect();
    // The container's directories are outside what other rbuild processes clean up, so the
    // state directory can be shared while the container runs.
    state.release_lock();
    let process = Process {
        args: argv,
        env: config.env.clone().unwrap_or_default(),
        cwd: config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        user: config.user.clone().unwrap_or_default(),
        hostname: id.chars().take(12).collect(),
        network,
        stdio: Stdio::Inherit,
        dev_files: vec![],
        mounts: vec![],
        limits: Default::default(),
        privileged: false,
    };
    let result = sandbox::run(
        &Rootfs {
            snapshots: &state.snapshots,
            layers: &layers,
            upper: &upper,
        },
        &process,
        &dir.join("run"),
        &mut |_, _| {},
        &AtomicBool::new(false),
    );
    let _ = std::fs::remove_dir_all(dir.join("run"));
    if args.rm {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    } else {
        eprintln!(
            "container {id} exited; its files are kept in {}",
            upper.fs.display()
        );
    }
    Ok(result.map_err(|e| anyhow!("{e}"))?.code())
}
