//! Registry credentials in Docker's client configuration (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), read and written the way the docker CLI does, so `docker login`
//! and `rbuild login` share credentials:
//!
//! - `credHelpers.<registry>`: the credential helper `docker-credential-<name>` for that
//!   registry (protocol: `get`/`store`/`erase` with JSON on stdin and stdout);
//! - `credsStore`: the helper for every other registry;
//! - `auths.<registry>.auth`: base64 of `user:password`, stored in the file itself.
//!
//! Docker Hub's key is `https://index.docker.io/v1/`; other registries use their host[:port].

use base64::Engine as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why credentials could not be read, stored or erased.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file, or a credential helper's pipes.
    #[error(transparent)]
    Io(#[from] crate::errors::Io),
    /// JSON that does not parse: the configuration file, or what a helper answered.
    #[error(transparent)]
    Json(#[from] crate::errors::Json),
    /// A credential helper ran and refused.
    #[error("docker-credential-{helper} {action}: {message}")]
    Helper {
        /// The helper's name (`pass`, `secretservice`).
        helper: String,
        /// What it was asked (`get localhost:5000`, `store`).
        action: String,
        /// What it said.
        message: String,
    },
    /// Stored credentials that are not base64 of `user:password`.
    #[error("the credentials for {key} in {}: {problem}", .file.display())]
    Malformed {
        /// The registry's key.
        key: String,
        /// The configuration file.
        file: PathBuf,
        /// What is wrong with them.
        problem: String,
    },
}

/// A credential operation's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> crate::errors::Io {
    crate::errors::io(format!("{what} {}", path.display()))
}

/// A user name and password (or token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password, or an identity token.
    pub secret: String,
}

/// The client configuration file.
pub fn config_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("config.json");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".docker/config.json")
}

/// The key of `registry` in the configuration (Docker Hub's is its historical URL).
pub fn server_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".to_string()
        }
        other => other.to_string(),
    }
}

fn read_config() -> Result<serde_json::Value> {
    let path = config_path();
    match std::fs::read(&path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes)
            .map_err(crate::errors::json(format!("parsing {}", path.display())))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(e) => Err(io("reading", &path)(e).into()),
    }
}

fn write_config(config: &serde_json::Value) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = config_path();
    let dir = path.parent().expect("config.json has a directory");
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let tmp = dir.join(format!(".config.json.tmp-{}", std::process::id()));
    let mut text = serde_json::to_vec_pretty(config).expect("a JSON value serializes");
    text.push(b'\n');
    let written = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(&text)?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("writing", &tmp)(e).into());
    }
    Ok(std::fs::rename(&tmp, &path).map_err(io("replacing", &path))?)
}

/// The helper configured for `key`, if any.
fn helper_for(config: &serde_json::Value, key: &str) -> Option<String> {
    config["credHelpers"][key]
        .as_str()
        .or_else(|| config["credsStore"].as_str())
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// Runs `docker-credential-HELPER ACTION` with `input` on stdin; its stdout.
fn run_helper(helper: &str, action: &str, input: &str) -> Result<Result<String, String>> {
    let program = format!("docker-credential-{helper}");
    let failed = |what: &str| crate::errors::io(format!("{what} the credential helper {program}"));
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(failed("running (is it installed?)"))?;
    let fed = child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes());
    let out = child.wait_with_output().map_err(failed("waiting for"))?;
    fed.map_err(failed("writing to"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(Ok(stdout))
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Ok(Err(if stdout.is_empty() { stderr } else { stdout }))
    }
}

/// The credentials for `registry`, if any are configured.
pub fn credentials(registry: &str) -> Result<Option<Credentials>> {
    let config = read_config()?;
    let key = server_key(registry);
    if let Some(helper) = helper_for(&config, &key) {
        return match run_helper(&helper, "get", &key)? {
            Ok(out) => {
                let v: serde_json::Value =
                    serde_json::from_str(&out).map_err(crate::errors::json(format!(
                        "reading what docker-credential-{helper} answered"
                    )))?;
                Ok(Some(Credentials {
                    username: v["Username"].as_str().unwrap_or_default().to_string(),
                    secret: v["Secret"].as_str().unwrap_or_default().to_string(),
                }))
            }
            Err(message) if message.contains("credentials not found") => Ok(None),
            Err(message) => Err(Error::Helper {
                helper,
                action: format!("get {key}"),
                message,
            }),
        };
    }
    let Some(encoded) = config["auths"][&key]["auth"].as_str() else {
        return Ok(None);
    };
    let malformed = |problem: String| Error::Malformed {
        key: key.clone(),
        file: config_path(),
        problem,
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| malformed(e.to_string()))?;
    let text = String::from_utf8_lossy(&decoded);
    let (username, secret) = text
        .split_once(':')
        .ok_or_else(|| malformed("not user:password".to_string()))?;
    Ok(Some(Credentials {
        username: username.to_string(),
        secret: secret.to_string(),
    }))
}

/// Stores credentials for `registry`: with its helper if one is configured, else in the file.
pub fn store(registry: &str, credentials: &Credentials) -> Result<()> {
    let mut config = read_config()?;
    let key = server_key(registry);
    if let Some(helper) = helper_for(&config, &key) {
        let input = serde_json::json!({
            "ServerURL": key,
            "Username": credentials.username,
            "Secret": credentials.secret,
        });
        if let Err(message) = run_helper(&helper, "store", &input.to_string())? {
            return Err(Error::Helper {
                helper,
                action: "store".to_string(),
                message,
            });
        }
        // Docker leaves an empty entry in auths to list the registry.
        config["auths"][&key] = serde_json::json!({});
        return write_config(&config);
    }
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", credentials.username, credentials.secret));
    if !config["auths"].is_object() {
        config["auths"] = serde_json::json!({});
    }
    config["auths"][&key] = serde_json::json!({ "auth": encoded });
    write_config(&config)
}

/// Removes the credentials for `registry`; whether there were any.
pub fn erase(registry: &str) -> Result<bool> {
    let mut config = read_config()?;
    let key = server_key(registry);
    let mut found = false;
    if let Some(helper) = helper_for(&config, &key) {
        found = run_helper(&helper, "erase", &key)?.is_ok();
    }
    if let Some(auths) = config["auths"].as_object_mut() {
        found |= auths.remove(&key).is_some();
    }
    if found {
        write_config(&config)?;
    }
    Ok(found)
}
