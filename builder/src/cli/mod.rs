//! The command line: clap's definitions, one module per subcommand ([`commands`]), progress
//! output and diagnostics. It parses the command line and wires the frontend (Dockerfile →
//! graph), the solver (graph → outputs, cached), the runner (sandboxes and layers) and the
//! store, registry client and exporters of this crate. Nothing outside this folder knows its
//! types.

pub mod commands;
pub mod diagnostics;
pub mod progress;
pub mod rawjson;
pub mod template;

use crate::registry;
use crate::rootless;
use crate::store::state;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// rbuild builds container images from Dockerfiles, without a daemon.
#[derive(Parser)]
#[command(
    name = "rbuild",
    version,
    arg_required_else_help = true,
    after_help = "With no subcommand, rbuild builds: `rbuild -t app:1.0 .` is `rbuild build -t app:1.0 .`\n\
                  State (images, layers, cache) lives in /var/lib/rbuild for root, else in \
                  $XDG_DATA_HOME/rbuild (~/.local/share/rbuild); --root or RBUILD_ROOT moves it."
)]
struct Cli {
    /// State directory (images, layers, cache) [default: /var/lib/rbuild for root]
    #[arg(long, global = true, env = "RBUILD_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,

    /// Log what rbuild does (also RUST_LOG=debug)
    #[arg(long, global = true)]
    debug: bool,

    /// How steps get their root filesystems: overlayfs mounts, or copies (native) where
    /// overlayfs cannot be mounted; auto tries overlayfs first
    #[arg(
        long,
        global = true,
        env = "RBUILD_SNAPSHOTTER",
        value_enum,
        default_value = "auto"
    )]
    snapshotter: SnapshotterArg,

    /// Trust this CA certificate (PEM) for registries' TLS, besides the system's
    #[arg(long = "registry-ca", global = true, value_name = "FILE")]
    registry_ca: Vec<PathBuf>,

    /// Speak plain HTTP to this registry (host[:port]); loopback registries that do not speak
    /// TLS are reached over HTTP anyway, as Docker does
    #[arg(long = "insecure-registry", global = true, value_name = "HOST")]
    insecure_registry: Vec<String>,

    /// How long to wait for a registry to answer (to connect, to answer a request, between two
    /// reads of a download) before giving up on it, in seconds
    #[arg(
        long = "registry-timeout",
        global = true,
        env = "RBUILD_REGISTRY_TIMEOUT",
        value_name = "SECONDS",
        default_value = "30"
    )]
    registry_timeout: u64,

    #[command(subcommand)]
    command: Command,
}

const SUBCOMMANDS: &[&str] = &[
    "attestations",
    "build",
    "check",
    "completion",
    "du",
    "explain",
    "graph",
    "history",
    "images",
    "imagetools",
    "inspect",
    "lint",
    "load",
    "login",
    "logout",
    "man",
    "prune",
    "pull",
    "push",
    "rmi",
    "run",
    "save",
    "sbom",
    "tag",
    "version",
    "help",
];

/// Docker's two-word forms and what they are here (`docker image ls` is `rbuild images`).
const LONG_FORMS: &[(&str, &str, &str)] = &[
    ("image", "ls", "images"),
    ("image", "list", "images"),
    ("image", "rm", "rmi"),
    ("image", "remove", "rmi"),
    ("image", "build", "build"),
    ("image", "push", "push"),
    ("image", "pull", "pull"),
    ("image", "tag", "tag"),
    ("image", "inspect", "inspect"),
    ("image", "history", "history"),
    ("image", "save", "save"),
    ("image", "load", "load"),
    ("image", "prune", "prune"),
    ("container", "run", "run"),
    ("system", "df", "du"),
    ("system", "prune", "prune"),
    ("builder", "prune", "prune"),
    ("builder", "du", "du"),
    ("buildx", "build", "build"),
    ("buildx", "du", "du"),
    ("buildx", "prune", "prune"),
    ("buildx", "imagetools", "imagetools"),
];

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile and a context directory
    Build(Box<commands::build::BuildArgs>),
    /// Print a Dockerfile's build graph (Graphviz DOT or JSON), marking cached steps
    Graph(commands::graph::GraphArgs),
    /// Say why the steps of the last build on this root missed the cache
    Explain(commands::explain::ExplainArgs),
    /// Verify the state directory: blobs match their digests, records and tags point at data
    Check,
    /// Show the space the state directory uses, by kind, and how much is reclaimable
    Du(commands::du::DuArgs),
    /// List the images in the local store
    Images(commands::images::ImagesArgs),
    /// Show the steps that made an image
    History(commands::history::HistoryArgs),
    /// Show an image's details as JSON
    Inspect(commands::inspect::InspectArgs),
    /// Give an image another name
    Tag(commands::tag::TagArgs),
    /// Remove image names (`rbuild prune` then reclaims what only they needed)
    Rmi(commands::rmi::RmiArgs),
    /// Write images to an archive (Docker's format, or OCI)
    Save(commands::save::SaveArgs),
    /// Read images from an archive (`docker save`, OCI layouts, rbuild save)
    Load(commands::load::LoadArgs),
    /// Log in to a registry (credentials go where `docker login` puts them)
    Login(commands::login::LoginArgs),
    /// Remove a registry's credentials
    Logout(commands::login::LogoutArgs),
    /// Run the build checks on a Dockerfile without building it (exit 1 if any finds something)
    Lint(commands::lint::LintArgs),
    /// Remove build cache (never what tagged images need)
    Prune(commands::prune::PruneArgs),
    /// Pull an image from its registry into the local store
    Pull(commands::pull::PullArgs),
    /// Push an image from the local store to a registry
    Push(commands::push::PushArgs),
    /// Run a command in a new container from an image (a convenience to try images)
    Run(commands::run::RunArgs),
    /// Print an image's software bill of materials (SPDX 2.3 JSON): its packages, each with
    /// the layer and instruction that introduced it
    Sbom(commands::sbom::SbomArgs),
    /// Make multi-platform indexes from images in registries, inspect remote images (buildx's
    /// `imagetools create|inspect`)
    Imagetools(commands::imagetools::ImagetoolsArgs),
    /// List an image's attestations (SBOM, provenance), or print one (`--type sbom|provenance`)
    /// as its in-toto statement
    Attestations(commands::attestations::AttestationsArgs),
    /// Print rbuild's version, the Dockerfile syntax it implements and where its state lives
    Version,
    /// Print a shell completion script: `rbuild completion bash > /etc/bash_completion.d/rbuild`
    Completion {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `rbuild man > /usr/local/share/man/man1/rbuild.1`
    Man,
}

/// `--snapshotter`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum SnapshotterArg {
    /// overlayfs when it can be mounted, else native.
    Auto,
    /// overlayfs mounts (fast: nothing is copied).
    Overlayfs,
    /// Copies of the layers, and a comparison afterwards (works on any filesystem).
    Native,
}

impl From<SnapshotterArg> for state::SnapshotterChoice {
    fn from(arg: SnapshotterArg) -> Self {
        match arg {
            SnapshotterArg::Auto => state::SnapshotterChoice::Auto,
            SnapshotterArg::Overlayfs => state::SnapshotterChoice::Overlayfs,
            SnapshotterArg::Native => state::SnapshotterChoice::Native,
        }
    }
}

/// Options shared by every subcommand.
#[derive(Clone)]
pub struct Global {
    /// The state directory.
    pub root: PathBuf,
    /// The snapshotter to use.
    pub snapshotter: state::SnapshotterChoice,
    /// How to reach registries.
    pub registries: registry::RegistryOptions,
}

impl Global {
    /// Opens the state directory, shared with other rbuild processes.
    pub fn state(&self) -> anyhow::Result<state::State> {
        Ok(state::State::open(&self.root, self.snapshotter)?)
    }

    /// Opens the state directory alone (`prune`, `check`).
    pub fn state_exclusive(&self) -> anyhow::Result<state::State> {
        Ok(state::State::open_exclusive(&self.root, self.snapshotter)?)
    }
}

/// Inserts `build` where the subcommand would be, when the command line has none: after the
/// global options, if the next word is not a subcommand or a help/version flag.
/// The global options that take a value (as `--root DIR` or `--root=DIR`).
const GLOBAL_VALUE_OPTIONS: &[&str] = &[
    "--root",
    "--snapshotter",
    "--registry-ca",
    "--insecure-registry",
    "--registry-timeout",
];

fn with_default_subcommand(
    args: Vec<std::ffi::OsString>,
) -> Result<Vec<std::ffi::OsString>, String> {
    let mut i = 1;
    while i < args.len() {
        let arg = args[i].to_string_lossy();
        let with_value = |a: &str| {
            GLOBAL_VALUE_OPTIONS
                .iter()
                .any(|o| a.strip_prefix(o).is_some_and(|rest| rest.starts_with('=')))
        };
        match arg.as_ref() {
            a if GLOBAL_VALUE_OPTIONS.contains(&a) => i += 2,
            "--debug" => i += 1,
            a if with_value(a) => i += 1,
            _ => break,
        }
    }
    let Some(word) = args.get(i).map(|a| a.to_string_lossy().into_owned()) else {
        return Ok(args);
    };
    if SUBCOMMANDS.contains(&word.as_str())
        || matches!(word.as_str(), "-h" | "--help" | "-V" | "--version")
    {
        return Ok(args);
    }
    let next = args.get(i + 1).map(|a| a.to_string_lossy().into_owned());
    if let Some((_, _, ours)) = LONG_FORMS
        .iter()
        .find(|(a, b, _)| *a == word && Some(*b) == next.as_deref())
    {
        let mut out = args;
        out.splice(i..i + 2, [std::ffi::OsString::from(ours)]);
        return Ok(out);
    }
    // A word that is neither a command nor a path is a mistyped command, not a context.
    let looks_like_context = word.starts_with('-')
        || word.contains('/')
        || word.contains(':')
        || word.starts_with('.')
        || std::path::Path::new(&word).exists();
    if !looks_like_context {
        let known = SUBCOMMANDS
            .iter()
            .copied()
            .chain(LONG_FORMS.iter().map(|f| f.0));
        let mut message = format!("unknown command {word:?}");
        if let Some(s) = rbuild_frontend::instructions::suggest(&word, known) {
            message.push_str(&format!(" (did you mean `rbuild {s}`?)"));
        }
        message.push_str(&format!(
            "; to build a directory, name it as a path (`rbuild ./{word}`) or use `rbuild build \
             {word}`; `rbuild --help` lists the commands"
        ));
        return Err(message);
    }
    let mut out = args;
    out.insert(i, "build".into());
    Ok(out)
}

/// Runs `rbuild` with the process's arguments, and exits.
pub fn main() {
    let args = match with_default_subcommand(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    };
    let cli = Cli::parse_from(args);
    let filter = if cli.debug {
        tracing_subscriber::EnvFilter::new("debug")
    } else {
        tracing_subscriber::EnvFilter::try_from_default_env()
            // rustls' verifier logs each refused certificate; rbuild's own error says it.
            .unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,rustls_platform_verifier=off")
            })
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // TLS for registries: rustls with the ring provider (pure Rust, no system OpenSSL).
    let _ = rustls::crypto::ring::default_provider().install_default();

    // The default state directory depends on who runs rbuild: decide it before becoming root
    // of a user namespace.
    let global = Global {
        root: cli.root.clone().unwrap_or_else(state::default_root),
        snapshotter: cli.snapshotter.into(),
        registries: registry::RegistryOptions {
            ca_files: cli.registry_ca.clone(),
            insecure: cli.insecure_registry.clone(),
            timeout: std::time::Duration::from_secs(cli.registry_timeout.max(1)),
        },
    };
    // Still single-threaded here, as entering a user namespace requires.
    if let Err(e) = rootless::enter() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    let result = match cli.command {
        Command::Build(args) => commands::build::run(&global, *args),
        Command::Graph(args) => commands::graph::run(&global, args),
        Command::Check => commands::check::run(&global),
        Command::Explain(args) => commands::explain::run(&global, args),
        Command::Du(args) => commands::du::run(&global, args),
        Command::Images(args) => commands::images::run(&global, args),
        Command::History(args) => commands::history::run(&global, args),
        Command::Inspect(args) => commands::inspect::run(&global, args),
        Command::Tag(args) => commands::tag::run(&global, args),
        Command::Rmi(args) => commands::rmi::run(&global, args),
        Command::Save(args) => commands::save::run(&global, args),
        Command::Load(args) => commands::load::run(&global, args),
        Command::Login(args) => commands::login::login(&global, args),
        Command::Logout(args) => commands::login::logout(args),
        Command::Prune(args) => commands::prune::run(&global, args),
        Command::Lint(args) => commands::lint::run(&global, args),
        Command::Pull(args) => commands::pull::run(&global, args),
        Command::Push(args) => commands::push::run(&global, args),
        Command::Run(args) => commands::run::run(&global, args),
        Command::Sbom(args) => commands::sbom::run(&global, args),
        Command::Attestations(args) => commands::attestations::run(&global, args),
        Command::Imagetools(args) => commands::imagetools::run(&global, args),
        Command::Version => {
            println!("rbuild {}", env!("CARGO_PKG_VERSION"));
            println!(
                " Dockerfile syntax: {} (rbuild's own implementation, no frontend image)",
                rbuild_frontend::parser::IMPLEMENTED_SYNTAX
            );
            println!(" State directory:   {}", global.root.display());
            Ok(0)
        }
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "rbuild", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(command).render(&mut std::io::stdout()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(0),
            }
        }
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let message = crate::errors::chain(e.as_ref());
            eprintln!("error: {message}");
            if let Some(hint) = state::full_disk_hint(&global.root, &message) {
                eprintln!("  = help: {hint}");
            }
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_default_subcommand;

    fn words(s: &str) -> Vec<String> {
        let args = s.split(' ').map(std::ffi::OsString::from).collect();
        with_default_subcommand(args)
            .unwrap()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn no_subcommand_means_build() {
        assert_eq!(
            words("rbuild -t a:1 ."),
            ["rbuild", "build", "-t", "a:1", "."]
        );
        assert_eq!(
            words("rbuild --snapshotter native -t a ."),
            ["rbuild", "--snapshotter", "native", "build", "-t", "a", "."]
        );
        assert_eq!(
            words("rbuild --root /x -t a ."),
            ["rbuild", "--root", "/x", "build", "-t", "a", "."]
        );
        assert_eq!(
            words("rbuild --root=/x ."),
            ["rbuild", "--root=/x", "build", "."]
        );
        assert_eq!(
            words("rbuild --registry-timeout 5 pull x"),
            ["rbuild", "--registry-timeout", "5", "pull", "x"]
        );
        assert_eq!(
            words("rbuild --root /x run --rm a"),
            ["rbuild", "--root", "/x", "run", "--rm", "a"]
        );
        assert_eq!(words("rbuild images"), ["rbuild", "images"]);
        assert_eq!(words("rbuild --help"), ["rbuild", "--help"]);
        assert_eq!(words("rbuild"), ["rbuild"]);
        assert_eq!(words("rbuild -"), ["rbuild", "build", "-"]);
        assert_eq!(
            words("rbuild https://example.com/c.tar"),
            ["rbuild", "build", "https://example.com/c.tar"]
        );
    }

    #[test]
    fn docker_long_forms_and_mistyped_commands() {
        assert_eq!(words("rbuild image ls"), ["rbuild", "images"]);
        assert_eq!(
            words("rbuild --root /x system df"),
            ["rbuild", "--root", "/x", "du"]
        );
        assert_eq!(words("rbuild builder prune -f"), ["rbuild", "prune", "-f"]);
        assert_eq!(
            words("rbuild buildx build -t a ."),
            ["rbuild", "build", "-t", "a", "."]
        );
        let args = |s: &str| s.split(' ').map(std::ffi::OsString::from).collect();
        let e = with_default_subcommand(args("rbuild pusj x")).unwrap_err();
        assert!(
            e.contains("unknown command \"pusj\" (did you mean `rbuild push`?)"),
            "{e}"
        );
        let e = with_default_subcommand(args("rbuild ps")).unwrap_err();
        assert!(e.contains("rbuild ./ps"), "{e}");
    }
}
