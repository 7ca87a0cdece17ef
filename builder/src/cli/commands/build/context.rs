//! Where a build's context and Dockerfile come from, as `docker buildx build` takes them: a
//! directory; `-`, stdin holding a tar archive (plain, gzip, bzip2, xz or zstd) that is the
//! context, or else a Dockerfile with an empty context; an `http(s)://` URL of such a tarball
//! (or of a Dockerfile); a git repository (`https://host/repo.git#ref:subdir`, `git@host:repo`,
//! `git://…`), cloned with `git`; and `-f -`, the Dockerfile on stdin. What is fetched lives in a
//! temporary directory that [`Source`] removes when the build ends.

use anyhow::{Context as _, Result, anyhow, bail};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A context and Dockerfile ready for the pipeline.
pub struct Source {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile, when not `CONTEXT/Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    /// The Dockerfile's name in messages, when it came from stdin or a URL.
    pub dockerfile_name: Option<String>,
    /// A remote context's URL (as given) and immutable digest (a git commit's `sha1`, a
    /// tarball's `sha256`), which provenance names as the build's config source.
    pub origin: Option<(String, crate::provenance::DigestSet)>,
    /// Holds what was fetched.
    _temp: Option<tempfile::TempDir>,
}

/// The largest context archive or Dockerfile read from stdin or a URL (as the Dockerfile limit,
/// generous for sources, to keep a mistaken `-` from filling memory).
const MAX_STDIN: u64 = 4 << 30;

/// Resolves the `CONTEXT` argument and `-f`.
pub fn resolve(context: &Path, file: Option<&Path>) -> Result<Source> {
    let spec = context.to_string_lossy().into_owned();
    let file_on_stdin = file == Some(Path::new("-"));
    if spec == "-" && file_on_stdin {
        bail!("invalid argument: can't use stdin for both the build context and the Dockerfile");
    }
    let remote = spec == "-" || is_url(&spec) || git_url(&spec).is_some();
    if !remote && !file_on_stdin {
        return Ok(Source {
            context: context.to_path_buf(),
            dockerfile: file.map(Path::to_path_buf),
            dockerfile_name: None,
            origin: None,
            _temp: None,
        });
    }
    let temp = tempfile::Builder::new()
        .prefix("rbuild-context-")
        .tempdir()
        .context("creating a directory for the build context")?;
    let dir = temp.path().join("context");
    std::fs::create_dir(&dir).context("creating the context directory")?;
    let mut source = Source {
        context: context.to_path_buf(),
        dockerfile: file.map(Path::to_path_buf),
        dockerfile_name: None,
        origin: None,
        _temp: None,
    };
    if file_on_stdin {
        let path = temp.path().join("Dockerfile");
        std::fs::write(&path, read_stdin("the Dockerfile")?).context("saving the Dockerfile")?;
        source.dockerfile = Some(path);
        source.dockerfile_name = Some("Dockerfile".into());
    }
    if spec == "-" {
        let bytes = read_stdin("the build context")?;
        source.context = dir.clone();
        unpack_or_dockerfile(&bytes, temp.path(), &dir, &mut source)?;
    } else if let Some((url, reference, subdir)) = git_url(&spec) {
        let commit = clone(&url, reference.as_deref(), &dir)?;
        source.origin = Some((
            spec.clone(),
            crate::provenance::digest_set(&format!("sha1:{commit}")),
        ));
        source.context = match subdir {
            Some(sub) => safe_join(&dir, &sub)?,
            None => dir.clone(),
        };
        let context = source.context.clone();
        inside(&context, &mut source)?;
    } else if is_url(&spec) {
        let bytes = download(&spec)?;
        let digest = rbuild_solver::Digest::of(&bytes);
        source.origin = Some((spec.clone(), crate::provenance::digest_set(digest.as_str())));
        source.context = dir.clone();
        if !unpack_or_dockerfile(&bytes, temp.path(), &dir, &mut source)? {
            source.dockerfile_name = Some(spec.clone());
        }
    }
    source._temp = Some(temp);
    Ok(source)
}

/// A context archive is unpacked into `dir` (returns `true`); anything else is the Dockerfile,
/// with `dir` left empty.
fn unpack_or_dockerfile(
    bytes: &[u8],
    temp: &Path,
    dir: &Path,
    source: &mut Source,
) -> Result<bool> {
    let saved = temp.join("received");
    std::fs::write(&saved, bytes).context("saving the build context")?;
    let unpacked = rbuild_runner::fileop::extract_archive(&saved, dir)
        .map_err(|e| anyhow!("unpacking the build context: {e}"))?;
    std::fs::remove_file(&saved).ok();
    if unpacked {
        inside(dir, source)?;
        return Ok(true);
    }
    if source.dockerfile_name.is_some() {
        bail!("the build context from stdin is not a tar archive, and -f - takes stdin too");
    }
    let path = temp.join("Dockerfile");
    std::fs::write(&path, bytes).context("saving the Dockerfile")?;
    source.dockerfile = Some(path);
    source.dockerfile_name = Some("Dockerfile".into());
    Ok(false)
}

/// For a fetched context: the Dockerfile is `-f`'s path inside it (or `Dockerfile`), named so
/// in messages. A Dockerfile from stdin stays as it is.
fn inside(context: &Path, source: &mut Source) -> Result<()> {
    if source.dockerfile_name.is_some() {
        return Ok(());
    }
    let name = match &source.dockerfile {
        Some(f) if f.is_relative() => f.to_string_lossy().into_owned(),
        Some(_) => return Ok(()),
        None => "Dockerfile".to_string(),
    };
    source.dockerfile = Some(safe_join(context, &name)?);
    source.dockerfile_name = Some(name);
    Ok(())
}

/// `dir/relative`, its symlinks resolved inside `dir` (a fetched context cannot point the build
/// at this machine's files).
fn safe_join(dir: &Path, relative: &str) -> Result<PathBuf> {
    rbuild_solver::contenthash::resolve_in_root(dir, relative, true)
        .with_context(|| format!("resolving {relative} in the build context"))
}

fn read_stdin(what: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what} from stdin"))?;
    if bytes.len() as u64 > MAX_STDIN {
        bail!("{what} on stdin is larger than 4 GiB");
    }
    Ok(bytes)
}

fn is_url(spec: &str) -> bool {
    spec.starts_with("http://") || spec.starts_with("https://")
}

/// A git repository as BuildKit recognizes one ([`rbuild_frontend::git::parse`]): the clone
/// URL, the ref and the subdirectory.
pub fn git_url(spec: &str) -> Option<(String, Option<String>, Option<String>)> {
    rbuild_frontend::git::parse(spec).map(|g| (g.remote, g.reference, g.subdir))
}

/// Clones `url` at `reference` (a branch, tag or commit; the default branch without one) into
/// `dir`, with its submodules, as BuildKit's git source does (no `.git` kept); returns the
/// commit.
fn clone(url: &str, reference: Option<&str>, dir: &Path) -> Result<String> {
    use crate::store::git;
    let auth = git::Auth::default();
    let commit = git::resolve(url, reference, &auth)?;
    git::clone_into(dir, url, reference, &commit, false, &auth)?;
    Ok(commit)
}

/// Downloads a context or Dockerfile from an HTTP(S) URL.
fn download(url: &str) -> Result<Vec<u8>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let response = reqwest::get(url)
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| {
                anyhow!(
                    "downloading the build context {url}: {}",
                    crate::errors::chain(&e)
                )
            })?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| anyhow!("downloading the build context {url}: {e}"))?;
        Ok(bytes.to_vec())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_a_fetched_context_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("up")).unwrap();
        let d = dir.path();
        assert_eq!(
            safe_join(d, "sub/Dockerfile").unwrap(),
            d.join("sub/Dockerfile")
        );
        assert_eq!(safe_join(d, "../../x").unwrap(), d.join("x"));
        assert_eq!(safe_join(d, "up/passwd").unwrap(), d.join("etc/passwd"));
    }
}
