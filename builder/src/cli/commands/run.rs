//! `rbuild run [--rm] IMAGE [CMD...]`: runs a command in a new container from an image, in the
//! same sandbox as build steps, passing stdio and the exit code through (like `buildah run`).

use crate::cli::Global;
use crate::registry::Registry;
use crate::registry::resolver::StoreThenRegistry;
use crate::store::layer::ensure_snapshots;
use crate::worker::BuildWorker;
use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::Signal;
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
    /// Set an environment variable (`KEY=VALUE`, or `KEY` to pass this one's)
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// The working directory in the container
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// The user (`name`, `uid`, `uid:gid`)
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Bind-mount a host directory or file: `HOST:CONTAINER[:ro]`
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    pub volumes: Vec<String>,
    /// Replace the image's ENTRYPOINT (an empty string clears it)
    #[arg(long, value_name = "COMMAND")]
    pub entrypoint: Option<String>,
    /// Keep stdin open (it always is: the container shares this terminal)
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal (the container uses this one)
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Publish a port: refused, rbuild runs containers only to try images
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    pub publish: Vec<String>,
    /// Give the container a name (accepted; rbuild names kept containers by their id)
    #[arg(long)]
    pub name: Option<String>,
    /// Run in the background: refused, rbuild runs containers in the foreground only
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Of a multi-platform image, the platform to run (`linux/arm64`: under emulation where
    /// one is registered) [default: this machine's]
    #[arg(long, value_parser = super::pull::parse_platform)]
    pub platform: Option<rbuild_frontend::Platform>,
    /// The image (pulled if it is not in the local store)
    pub image: String,
    /// The command, replacing the image's CMD (arguments to its ENTRYPOINT, if any)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// Runs the container; returns its exit code.
pub fn run(global: &Global, args: RunArgs) -> Result<i32> {
    if !args.publish.is_empty() {
        bail!(
            "-p {}: rbuild runs containers only to try images and publishes no ports; use \
             --network host to reach the container's servers on this machine's ports",
            args.publish.join(",")
        );
    }
    if args.detach {
        bail!("-d: rbuild runs containers in the foreground only (to try images)");
    }
    // Ctrl-C, SIGTERM and SIGHUP stop the container and end the command cleanly (its
    // directory removed with --rm), instead of leaving its processes to the kernel. Blocked
    // before any thread starts, so that only the waiting thread receives them.
    let cancel = Arc::new(AtomicBool::new(false));
    let interrupted = wait_for_signals(cancel.clone())?;
    let state = Arc::new(global.state()?);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let registry = Arc::new(Registry::new(global.registries.clone()));
    let resolved = image_of(&state, &registry, &runtime, &args)?;
    let worker = BuildWorker {
        named_dirs: Default::default(),
        fetched: Default::default(),
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
        &|_, _| {},
    )?;
    ensure_snapshots(&state, &output.layers)?;

    let config = &resolved.image.config;
    let mut argv: Vec<String> = match &args.entrypoint {
        Some(e) if e.is_empty() => vec![],
        Some(e) => vec![e.clone()],
        None => config.entrypoint.clone().unwrap_or_default(),
    };
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
    crate::store::containers::mark_running(&dir).context("recording the container's process")?;
    let layers: Vec<String> = output
        .layers
        .iter()
        .map(|l| l.diff_id.to_string())
        .collect();
    // The container's directories are outside what other rbuild processes clean up, so the
    // state directory can be shared while the container runs.
    state.release_lock();
    let mut env = config.env.clone().unwrap_or_default();
    for e in &args.env {
        let kv = match e.split_once('=') {
            Some(_) => e.clone(),
            None => match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => continue,
            },
        };
        let key = kv.split('=').next().unwrap_or_default().to_string();
        env.retain(|old| old.split('=').next() != Some(key.as_str()));
        env.push(kv);
    }
    let process = Process {
        args: argv,
        env,
        cwd: args
            .workdir
            .clone()
            .or_else(|| config.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        user: args
            .user
            .clone()
            .or_else(|| config.user.clone())
            .unwrap_or_default(),
        hostname: id.chars().take(12).collect(),
        network,
        stdio: Stdio::Inherit,
        dev_files: vec![],
        mounts: volumes(&args.volumes)?,
        limits: Default::default(),
        privileged: false,
    };
    let result = sandbox::run(
        &Rootfs {
            snapshots: &state.snapshots,
            layers: &layers,
            upper: &upper,
            // A kept container's changes are read later (diff, commit): synced, as Docker's.
            volatile: false,
        },
        &process,
        &dir.join("run"),
        &mut |_, _| {},
        &cancel,
    );
    let _ = std::fs::remove_dir_all(dir.join("run"));
    crate::store::containers::mark_stopped(&dir);
    if args.rm {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    } else {
        eprintln!(
            "container {id} exited; its files are kept in {}",
            upper.fs.display()
        );
    }
    if let Err(sandbox::SandboxError::Cancelled) = &result {
        let signal = interrupted
            .lock()
            .expect("signal")
            .unwrap_or(Signal::SIGINT);
        eprintln!("{signal}: the container was stopped");
        return Ok(128 + signal as i32);
    }
    Ok(result.map_err(|e| anyhow!("{e}"))?.code())
}

/// The image `args` runs: of the local store by name, id or digest (an untagged build result
/// too; of a multi-platform one, the platform asked for, or an error that lists the ones it
/// has), else resolved in its registry.
fn image_of(
    state: &Arc<crate::store::state::State>,
    registry: &Arc<Registry>,
    runtime: &tokio::runtime::Runtime,
    args: &RunArgs,
) -> Result<rbuild_frontend::ResolvedImage> {
    let platform = args
        .platform
        .clone()
        .unwrap_or_else(rbuild_frontend::Platform::host);
    let found = match crate::store::local::find(state, &args.image) {
        Ok(image) => Some(
            crate::store::local::for_platform(state, image, &platform)
                .with_context(|| args.image.clone())?,
        ),
        Err(_) => None,
    };
    Ok(match found {
        Some(image) => rbuild_frontend::ResolvedImage {
            reference: image
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| format!("rbuild-local@{}", image.manifest.digest)),
            digest: image.platform_manifest.clone(),
            image: image.config.clone(),
        },
        None => StoreThenRegistry::new(state, registry, runtime)
            .resolve(&args.image, &platform)
            .map_err(|e| anyhow!(e))?,
    })
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and the threads it starts) and waits for
/// them on a thread of its own, which sets `cancel` and records the signal.
fn wait_for_signals(cancel: Arc<AtomicBool>) -> Result<Arc<std::sync::Mutex<Option<Signal>>>> {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).context("blocking signals")?;
    let received = Arc::new(std::sync::Mutex::new(None));
    let seen = received.clone();
    std::thread::spawn(move || {
        if let Ok(signal) = set.wait() {
            *seen.lock().expect("signal") = Some(signal);
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    Ok(received)
}

/// `-v HOST:CONTAINER[:ro|:rw]` as bind mounts (the host path made absolute).
fn volumes(specs: &[String]) -> Result<Vec<sandbox::Mount>> {
    specs
        .iter()
        .map(|spec| {
            let parts: Vec<&str> = spec.split(':').collect();
            let (host, target, readonly) = match parts.as_slice() {
                [host, target] => (*host, *target, false),
                [host, target, "ro"] => (*host, *target, true),
                [host, target, "rw"] => (*host, *target, false),
                _ => bail!("-v {spec}: expected HOST:CONTAINER[:ro]"),
            };
            if !target.starts_with('/') {
                bail!("-v {spec}: the container path must be absolute");
            }
            let host = std::path::Path::new(host)
                .canonicalize()
                .with_context(|| format!("-v {spec}: {host}"))?;
            Ok(sandbox::Mount {
                target: target.to_string(),
                source: sandbox::MountSource::Host(host),
                readonly,
            })
        })
        .collect()
}
