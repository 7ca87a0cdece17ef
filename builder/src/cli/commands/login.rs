//! `rbuild login` and `rbuild logout`: registry credentials, kept where the docker CLI keeps
//! them (see `crate::registry::auth`).

use crate::cli::Global;
use crate::registry::Registry;
use crate::registry::auth::{self, Credentials};
use anyhow::{Context, Result, bail};
use std::io::Read;

/// Arguments of `rbuild login`.
#[derive(clap::Args)]
pub struct LoginArgs {
    /// The registry (host[:port]) [default: Docker Hub]
    pub server: Option<String>,
    /// User name
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin: arguments are visible to other users)
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
}

/// Arguments of `rbuild logout`.
#[derive(clap::Args)]
pub struct LogoutArgs {
    /// The registry (host[:port]) [default: Docker Hub]
    pub server: Option<String>,
}

/// The registry host a `login`/`logout` argument names (`https://host/…` → `host`).
fn registry_of(server: Option<&str>) -> String {
    let server = server.unwrap_or("docker.io");
    let host = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or(server);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

/// Checks the credentials against the registry, then stores them.
pub fn login(global: &Global, args: LoginArgs) -> Result<i32> {
    let registry = registry_of(args.server.as_deref());
    let Some(username) = args.username else {
        bail!("rbuild login needs --username (and --password-stdin or --password)");
    };
    let secret = match (args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are exclusive"),
        (Some(p), false) => p,
        (None, true) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the password from stdin")?;
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("rbuild login needs --password-stdin (or --password)"),
    };
    if secret.is_empty() {
        bail!("the password is empty");
    }
    let credentials = Credentials { username, secret };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let registry_client = Registry::new(global.registries.clone());
    runtime.block_on(registry_client.check_login(&registry, &credentials))?;
    auth::store(&registry, &credentials)?;
    println!("Login Succeeded");
    Ok(0)
}

/// Removes the stored credentials.
pub fn logout(args: LogoutArgs) -> Result<i32> {
    let registry = registry_of(args.server.as_deref());
    if auth::erase(&registry)? {
        println!(
            "Removing login credentials for {}",
            auth::server_key(&registry)
        );
    } else {
        println!("Not logged in to {}", auth::server_key(&registry));
    }
    Ok(0)
}
