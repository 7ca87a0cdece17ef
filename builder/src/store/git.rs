//! `ADD <git URL>`: checkouts for the solver's git source op, made with Debian's `git`.
//!
//! ```text
//! downloads/git/<commit>[-git]   a checkout of a commit, with submodules (`-git`: its .git kept)
//! downloads/tmp-git-*            checkouts in progress (removed at the next start)
//! ```
//!
//! The ref is resolved on every build (`git ls-remote`, as BuildKit does), and the commit keys
//! the step: a branch that moved reruns what depends on it; the same commit, from whatever URL,
//! is the same step. Credentials are BuildKit's: the `GIT_AUTH_TOKEN` secret (or
//! `GIT_AUTH_TOKEN.<host>`) as HTTP basic auth with user `x-access-token`, the
//! `GIT_AUTH_HEADER` secret (or `.<host>`) as the whole `Authorization` header, and for
//! `git@`/`ssh://` URLs the `--ssh default` agent.

use crate::store::{Context, Error, Result};
use rbuild_solver::{Digest, GitSource};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a git command may use to authenticate.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    /// An HTTP `Authorization` header value.
    pub header: Option<String>,
    /// An SSH agent socket.
    pub ssh_agent: Option<PathBuf>,
}

impl Auth {
    /// BuildKit's git credentials for `url` from the build's secrets and SSH agents.
    pub fn from_provided(url: &str, provided: &crate::worker::mounts::Provided) -> Auth {
        use base64::Engine;
        let host = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':', '@']).find(|p| !p.is_empty()))
            .unwrap_or_default()
            .to_string();
        let secret = |name: &str| {
            provided
                .secrets
                .get(&format!("{name}.{host}"))
                .or_else(|| provided.secrets.get(name))
                .map(|v| String::from_utf8_lossy(v).trim().to_string())
        };
        let header = secret("GIT_AUTH_HEADER").or_else(|| {
            secret("GIT_AUTH_TOKEN").map(|token| {
                let basic = base64::engine::general_purpose::STANDARD
                    .encode(format!("x-access-token:{token}"));
                format!("basic {basic}")
            })
        });
        Auth {
            header,
            ssh_agent: provided.ssh.get("default").cloned(),
        }
    }
}

/// Runs `git` with the credentials; returns its stdout.
fn git(args: &[&str], cwd: Option<&Path>, url: &str, auth: &Auth) -> Result<String> {
    let mut command = Command::new("git");
    if let Some(header) = &auth.header {
        command
            .arg("-c")
            .arg(format!("http.extraHeader=Authorization: {header}"));
    }
    command.args(args).env("GIT_TERMINAL_PROMPT", "0");
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    if let Some(agent) = &auth.ssh_agent {
        command.env("SSH_AUTH_SOCK", agent);
    }
    // No host key is known in a build; BuildKit's git source accepts new ones too.
    command.env(
        "GIT_SSH_COMMAND",
        "ssh -o StrictHostKeyChecking=accept-new -o BatchMode=yes",
    );
    let out = command
        .output()
        .map_err(|e| Error::Other(format!("running git (Debian package git) for {url}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "git {} {url}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `reference` is a full commit id.
fn is_commit(reference: &str) -> bool {
    reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit `reference` names in the repository at `url` (`HEAD` without one): a branch, a
/// tag (an annotated one's commit), or a commit id.
pub fn resolve(url: &str, reference: Option<&str>, auth: &Auth) -> Result<String> {
    let wanted = reference.unwrap_or("HEAD");
    if is_commit(wanted) {
        return Ok(wanted.to_ascii_lowercase());
    }
    let listing = git(&["ls-remote", url, wanted], None, url, auth)?;
    let mut plain = None;
    for line in listing.lines() {
        let Some((commit, name)) = line.split_once('\t') else {
            continue;
        };
        let exact = [
            wanted.to_string(),
            format!("refs/heads/{wanted}"),
            format!("refs/tags/{wanted}"),
        ];
        if name
            .strip_suffix("^{}")
            .is_some_and(|n| exact.iter().any(|e| e == n))
        {
            // The commit an annotated tag points at.
            return Ok(commit.to_string());
        }
        if exact.iter().any(|e| e == name) && plain.is_none() {
            plain = Some(commit.to_string());
        }
    }
    plain.ok_or_else(|| Error::Other(format!("git ref {wanted:?} not found in {url}")))
}

/// The checkout of `source`: its directory (the subdirectory asked for), the digest that
/// keys the step (from the commit) and the commit.
pub fn fetch(
    downloads: &Path,
    source: &GitSource,
    auth: &Auth,
) -> Result<(PathBuf, Digest, String)> {
    let url = &source.url;
    let commit = resolve(url, source.reference.as_deref(), auth)?;
    if let Some(sum) = &source.checksum
        && !commit.starts_with(&sum.to_ascii_lowercase())
    {
        return Err(Error::Other(format!(
            "ADD --checksum={sum}: {url}#{} is commit {commit}",
            source.reference.as_deref().unwrap_or("HEAD")
        )));
    }
    let name = match source.keep_git_dir {
        true => format!("{commit}-git"),
        false => commit.clone(),
    };
    let dir = downloads.join("git").join(&name);
    if !dir.is_dir() {
        let wanted = Wanted {
            url,
            reference: source.reference.as_deref(),
            commit: &commit,
            keep_git_dir: source.keep_git_dir,
        };
        checkout(downloads, &wanted, auth, &dir)?;
    }
    let root = match &source.subdir {
        Some(sub) => rbuild_solver::contenthash::resolve_in_root(&dir, sub, true)
            .with_context(|| format!("{sub} of {url}"))?,
        None => dir,
    };
    if !root.is_dir() {
        return Err(Error::Other(format!(
            "{url}#{}: no directory {}",
            source.reference.as_deref().unwrap_or(""),
            source.subdir.as_deref().unwrap_or("/")
        )));
    }
    let digest = Digest::of(format!("git commit {commit}").as_bytes());
    Ok((root, digest, commit))
}

/// Clones `commit` (found by `reference`) into the empty directory `dir`, with submodules;
/// without `keep_git_dir`, the `.git` is removed afterwards.
pub fn clone_into(
    dir: &Path,
    url: &str,
    reference: Option<&str>,
    commit: &str,
    keep_git_dir: bool,
    auth: &Auth,
) -> Result<()> {
    let at = Some(dir);
    git(&["init", "-q"], at, url, auth)?;
    git(&["remote", "add", "origin", url], at, url, auth)?;
    // The ref shallowly; a commit that only a full fetch reaches, the whole history.
    let wanted = reference.filter(|r| !is_commit(r)).unwrap_or(commit);
    if git(
        &["fetch", "-q", "--depth=1", "origin", wanted],
        at,
        url,
        auth,
    )
    .is_err()
    {
        let all = [
            "fetch",
            "-q",
            "--tags",
            "origin",
            "+refs/heads/*:refs/remotes/origin/*",
        ];
        git(&all, at, url, auth)?;
    }
    git(&["checkout", "-q", "--detach", commit], at, url, auth)?;
    let submodules = [
        "submodule",
        "update",
        "-q",
        "--init",
        "--recursive",
        "--depth=1",
    ];
    git(&submodules, at, url, auth)?;
    if !keep_git_dir {
        std::fs::remove_dir_all(dir.join(".git")).context("removing the clone's .git")?;
    }
    Ok(())
}

/// What [`fetch`] checks out: one commit of one repository.
struct Wanted<'a> {
    url: &'a str,
    reference: Option<&'a str>,
    commit: &'a str,
    keep_git_dir: bool,
}

/// Checks `wanted` out into `dir`, through a temporary directory (so a killed build leaves
/// no half checkout under its name).
fn checkout(downloads: &Path, wanted: &Wanted, auth: &Auth, dir: &Path) -> Result<()> {
    let tmp = downloads.join(format!(
        "tmp-git-{}",
        rbuild_runner::snapshot::unique_name()
    ));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let url = wanted.url;
    let result = (|| {
        clone_into(
            &tmp,
            url,
            wanted.reference,
            wanted.commit,
            wanted.keep_git_dir,
            auth,
        )?;
        std::fs::create_dir_all(downloads.join("git")).context("creating downloads/git")?;
        match std::fs::rename(&tmp, dir) {
            // Another build made the same checkout meanwhile.
            Err(_) if dir.is_dir() => Ok(()),
            other => other.with_context(|| format!("storing the checkout of {url}")),
        }
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_as_buildkit_takes_them() {
        let mut provided = crate::worker::mounts::Provided::default();
        provided
            .secrets
            .insert("GIT_AUTH_TOKEN".into(), b"tok\n".to_vec());
        let auth = Auth::from_provided("https://git.example.com/o/r.git", &provided);
        // base64("x-access-token:tok")
        assert_eq!(
            auth.header.as_deref(),
            Some("basic eC1hY2Nlc3MtdG9rZW46dG9r")
        );
        provided.secrets.insert(
            "GIT_AUTH_HEADER.git.example.com".into(),
            b"bearer xyz".to_vec(),
        );
        let auth = Auth::from_provided("https://git.example.com/o/r.git", &provided);
        assert_eq!(auth.header.as_deref(), Some("bearer xyz"));
        assert!(is_commit("0123456789abcdef0123456789abcdef01234567") && !is_commit("main"));
    }
}
