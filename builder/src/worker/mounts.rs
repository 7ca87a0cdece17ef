//! What RUN mounts need from the host: secrets and SSH agents given on the command line, and
//! the persistent directories of cache mounts.
//!
//! Cache mounts live in `cache-mounts/<key>/<n>` of the state directory, where `key` is the
//! sha256 of the cache id (and of the seed, for a cache made `from` a stage). Instance `0` is
//! the shared one; `sharing=shared` takes a shared lock on `<n>.lock` while a step uses it,
//! `locked` an exclusive one (waiting for the others), and `private` takes the first instance
//! it can lock exclusively without waiting, creating `1`, `2`… when all are in use. The locks
//! are `flock`s, so they also order steps of concurrent rbuild processes and vanish when a
//! process dies. A new instance is made in a temporary directory and renamed into place.

use nix::fcntl::{Flock, FlockArg};
use rbuild_solver::{CacheSharing, Digest};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a secret, an SSH agent or a cache mount cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--secret` or `--ssh` value that cannot be used, said in words.
    #[error("{0}")]
    Spec(String),
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] crate::errors::Io),
    /// A cache mount's lock cannot be taken.
    #[error("locking cache mount {key}")]
    Lock {
        /// The cache's storage key.
        key: String,
        /// The system's error.
        #[source]
        source: nix::errno::Errno,
    },
    /// A new cache directory cannot be made or seeded.
    #[error("creating cache mount {key}")]
    Create {
        /// The cache's storage key.
        key: String,
        /// What failed: the seed's error, or the system's.
        #[source]
        source: BoxError,
    },
}

/// Any error, from a seed (see [`Seed`]).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A mount's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> crate::errors::Io {
    crate::errors::io(format!("{what} {}", path.display()))
}

macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err(Error::Spec(format!($($arg)*)))
    };
}

/// Secrets and SSH agents given to a build (`--secret`, `--ssh`).
#[derive(Clone, Debug, Default)]
pub struct Provided {
    /// Secret values by id.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// Agent sockets by id.
    pub ssh: BTreeMap<String, PathBuf>,
}

/// Parses `--secret` values as buildx does: `id=ID[,src=FILE|source=FILE][,env=VAR]
/// [,type=file|env]`. With neither a file nor a variable, the variable named like the id is
/// used if it is set, else a file named like the id.
pub fn parse_secret(
    spec: &str,
    getenv: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<u8>)> {
    let mut id = None;
    let mut file = None;
    let mut env = None;
    let mut kind = None;
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').ok_or_else(|| {
            Error::Spec(format!(
                "invalid --secret {spec:?}: {field:?} is not key=value"
            ))
        })?;
        match k.trim().to_ascii_lowercase().as_str() {
            "id" => id = Some(v.to_string()),
            "src" | "source" => file = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            "type" => match v {
                "file" | "env" => kind = Some(v.to_string()),
                other => refuse!("invalid --secret {spec:?}: unsupported type {other:?}"),
            },
            other => refuse!("invalid --secret {spec:?}: unexpected key {other:?}"),
        }
    }
    if kind.as_deref() == Some("env") && env.is_none() {
        env = file.take();
    }
    let id = match id {
        Some(id) => id,
        None => file
            .as_deref()
            .or(env.as_deref())
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .ok_or_else(|| Error::Spec(format!("invalid --secret {spec:?}: no id")))?,
    };
    if file.is_none() && env.is_none() {
        if getenv(&id).is_some() {
            env = Some(id.clone());
        } else {
            file = Some(id.clone());
        }
    }
    let value = match (env, file) {
        (Some(var), _) => getenv(&var)
            .ok_or_else(|| {
                Error::Spec(format!(
                    "secret {id}: environment variable {var} is not set"
                ))
            })?
            .into_bytes(),
        (None, Some(path)) => {
            std::fs::read(&path).map_err(io(&format!("secret {id}: reading"), Path::new(&path)))?
        }
        (None, None) => unreachable!("one of them was chosen above"),
    };
    Ok((id, value))
}

/// Parses `--ssh` values: `default`, `ID=SOCKET` (an SSH agent socket; `default` with no path
/// uses `$SSH_AUTH_SOCK`). Key files, which buildx also accepts, are not supported.
pub fn parse_ssh(spec: &str, getenv: &dyn Fn(&str) -> Option<String>) -> Result<(String, PathBuf)> {
    let (id, path) = match spec.split_once('=') {
        Some((id, path)) => (id.to_string(), path.to_string()),
        None => (
            spec.to_string(),
            getenv("SSH_AUTH_SOCK").ok_or_else(|| {
                Error::Spec(format!(
                    "--ssh {spec}: SSH_AUTH_SOCK is not set; give the agent socket as {spec}=PATH"
                ))
            })?,
        ),
    };
    let path = PathBuf::from(path.split(',').next().unwrap_or_default());
    let meta = std::fs::metadata(&path).map_err(io(&format!("--ssh {id}:"), &path))?;
    if !meta.file_type().is_socket() {
        refuse!(
            "--ssh {id}: {} is not an SSH agent socket (rbuild forwards agents, not key files)",
            path.display()
        );
    }
    Ok((id, path))
}

/// A cache mount directory in use; the lock is released when this is dropped.
pub struct CacheLease {
    /// The directory to mount.
    pub dir: PathBuf,
    _lock: Flock<File>,
}

/// Fills a new, empty cache directory.
pub type Seed<'a> = &'a dyn Fn(&Path) -> Result<(), BoxError>;

/// What a new cache directory starts as.
pub struct CacheInit<'a> {
    /// Permission bits, owner and group of the directory.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Fills a new, empty directory (a cache made `from` a stage).
    pub seed: Option<Seed<'a>>,
}

/// The storage key of a cache: its id, and what seeds it.
pub fn cache_key(id: &str, seed: Option<&str>) -> String {
    let digest = Digest::of_json(&serde_json::json!({ "id": id, "seed": seed }));
    digest.to_string().trim_start_matches("sha256:").to_string()
}

/// Takes the cache `key` under `root` (`cache-mounts/`) for one step, as `sharing` says,
/// creating the directory if needed.
pub fn acquire(
    root: &Path,
    key: &str,
    sharing: CacheSharing,
    init: &CacheInit,
) -> Result<CacheLease> {
    let base = root.join(key);
    std::fs::create_dir_all(&base).map_err(io("creating", &base))?;
    let open = |n: usize| -> Result<File> {
        let path = base.join(format!("{n}.lock"));
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io("opening", &path)(e).into())
    };
    let locking = |source| Error::Lock {
        key: key.to_string(),
        source,
    };
    let (n, lock) = match sharing {
        CacheSharing::Shared | CacheSharing::Locked => {
            let arg = if sharing == CacheSharing::Shared {
                FlockArg::LockShared
            } else {
                FlockArg::LockExclusive
            };
            let lock = Flock::lock(open(0)?, arg).map_err(|(_, e)| locking(e))?;
            (0, lock)
        }
        CacheSharing::Private => {
            let mut n = 0;
            loop {
                match Flock::lock(open(n)?, FlockArg::LockExclusiveNonblock) {
                    Ok(lock) => break (n, lock),
                    Err((_, nix::errno::Errno::EWOULDBLOCK)) => n += 1,
                    Err((_, e)) => return Err(locking(e)),
                }
            }
        }
    };
    let dir = base.join(n.to_string());
    if !dir.exists() {
        let tmp = base.join(format!("tmp-{}", rbuild_runner::snapshot::unique_name()));
        std::fs::create_dir(&tmp).map_err(io("creating", &tmp))?;
        let made = (|| -> Result<(), BoxError> {
            if let Some(seed) = init.seed {
                seed(&tmp)?;
            }
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(init.mode))?;
            let meta = std::fs::metadata(&tmp)?;
            if (meta.uid(), meta.gid()) != (init.uid, init.gid) {
                std::os::unix::fs::chown(&tmp, Some(init.uid), Some(init.gid))?;
            }
            Ok(())
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(Error::Create {
                key: key.to_string(),
                source: e,
            });
        }
        if std::fs::rename(&tmp, &dir).is_err() {
            // Someone else made it first (a shared user); theirs is as good.
            std::fs::remove_dir_all(&tmp).map_err(io("removing", &tmp))?;
        }
    }
    Ok(CacheLease { dir, _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn secrets_like_buildx() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("npmrc");
        std::fs::write(&file, "token").unwrap();
        let getenv = env(&[("TOKEN", "t0k"), ("gh", "from-env")]);
        let spec = format!("id=npm,src={}", file.display());
        assert_eq!(
            parse_secret(&spec, &getenv).unwrap(),
            ("npm".into(), b"token".to_vec())
        );
        assert_eq!(
            parse_secret("id=tok,env=TOKEN", &getenv).unwrap(),
            ("tok".into(), b"t0k".to_vec())
        );
        assert_eq!(
            parse_secret("id=x,type=env,src=TOKEN", &getenv).unwrap().1,
            b"t0k"
        );
        // An id alone: the variable of that name.
        assert_eq!(parse_secret("id=gh", &getenv).unwrap().1, b"from-env");
        // The id defaults to the file's name.
        let spec = format!("src={}", file.display());
        assert_eq!(parse_secret(&spec, &getenv).unwrap().0, "npmrc");
        let e = parse_secret("id=a,env=UNSET", &getenv).unwrap_err();
        assert!(e.to_string().contains("UNSET is not set"), "{e}");
        assert!(parse_secret("id=a,colour=red", &getenv).is_err());
        assert!(parse_secret("id=a,type=vault", &getenv).is_err());
    }

    #[test]
    fn ssh_needs_an_agent_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let sock_s = sock.to_string_lossy().into_owned();
        let getenv = move |k: &str| (k == "SSH_AUTH_SOCK").then(|| sock_s.clone());
        assert_eq!(
            parse_ssh("default", &getenv).unwrap(),
            ("default".into(), sock.clone())
        );
        let key = dir.path().join("id_rsa");
        std::fs::write(&key, "key").unwrap();
        let e = parse_ssh(&format!("k={}", key.display()), &getenv).unwrap_err();
        assert!(e.to_string().contains("not an SSH agent socket"), "{e}");
        assert!(parse_ssh("default", &|_: &str| None).is_err());
    }

    #[test]
    fn cache_sharing_modes() {
        let dir = tempfile::tempdir().unwrap();
        let (uid, gid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let init = CacheInit {
            mode: 0o700,
            uid,
            gid,
            seed: None,
        };
        let key = cache_key("/root/.cache", None);
        let a = acquire(dir.path(), &key, CacheSharing::Shared, &init).unwrap();
        let b = acquire(dir.path(), &key, CacheSharing::Shared, &init).unwrap();
        assert_eq!(a.dir, b.dir, "shared users share one directory");
        let meta = std::fs::metadata(&a.dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        // Private users get another instance while the shared one is in use.
        let p = acquire(dir.path(), &key, CacheSharing::Private, &init).unwrap();
        assert_ne!(p.dir, a.dir);
        drop((a, b));
        // Once free, a private user gets instance 0 back.
        let p2 = acquire(dir.path(), &key, CacheSharing::Private, &init).unwrap();
        assert_eq!(p2.dir, dir.path().join(&key).join("0"));
        drop(p2);
        // A seeded cache starts with the seed's files.
        let seed = |d: &Path| -> Result<(), BoxError> {
            std::fs::write(d.join("seeded"), "1")?;
            Ok(())
        };
        let init = CacheInit {
            mode: 0o755,
            uid,
            gid,
            seed: Some(&seed),
        };
        let s = acquire(
            dir.path(),
            &cache_key("/root/.cache", Some("x")),
            CacheSharing::Locked,
            &init,
        )
        .unwrap();
        assert!(s.dir.join("seeded").exists());
    }
}
