//! `ADD https://…`: downloads for the solver's HTTP source op.
//!
//! ```text
//! downloads/<key>/<filename>   a finished download (mode 0600, mtime = Last-Modified)
//! downloads/urls/<sha256>.json   what a URL (with a checksum, if any) gave last time: key,
//!                              ETag, Last-Modified
//! downloads/tmp-*              downloads in progress (removed at the next start)
//! ```
//!
//! `key` is the digest of the content, the file name and the Last-Modified time, which is also
//! the content digest the solver puts in the op's cache key. As BuildKit does, the URL is asked
//! again on every build (with `If-None-Match`/`If-Modified-Since`, so an unchanged file costs a
//! 304), except when `--checksum` names content that is already here.

use crate::store::{Context, Result};
use futures_util::StreamExt;
use rbuild_solver::{Digest, HttpSource};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a URL gave the last time it was downloaded.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    key: String,
    content: Digest,
    etag: Option<String>,
    last_modified: Option<String>,
}

/// The record of a source: one per URL, and one per URL and checksum, so that a download
/// pinned by a checksum stays found when the URL has changed since.
fn record_path(dir: &Path, source: &HttpSource) -> PathBuf {
    let id = match &source.checksum {
        Some(sum) => format!("{}\n{sum}", source.url),
        None => source.url.clone(),
    };
    let name = Digest::of(id.as_bytes());
    dir.join("urls").join(format!("{}.json", name.hex()))
}

/// The key of a download: what its file in the build will be.
fn key_of(content: &Digest, filename: &str, last_modified: Option<&str>) -> Digest {
    Digest::of_json(&serde_json::json!({
        "content": content,
        "filename": filename,
        "last_modified": last_modified,
    }))
}

/// Removes unfinished downloads. Only call while holding the state directory's lock.
pub fn clean_tmp(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("tmp-") {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    if let Ok(records) = std::fs::read_dir(dir.join("urls")) {
        for entry in records {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}

/// The content digest (sha256 of the file) of `source`'s last download, from its record.
pub fn content(dir: &Path, source: &HttpSource) -> Option<Digest> {
    let bytes = std::fs::read(record_path(dir, source)).ok()?;
    serde_json::from_slice::<Record>(&bytes)
        .ok()
        .map(|r| r.content)
}

/// Fetches `source` (see the module docs); returns the directory holding its file and the
/// digest for its cache key.
pub fn fetch(
    dir: &Path,
    runtime: &tokio::runtime::Handle,
    source: &HttpSource,
) -> Result<(PathBuf, Digest)> {
    let record_file = record_path(dir, source);
    let record: Option<Record> = std::fs::read(&record_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    // The record is only usable if its download is still here under the same file name.
    let known = record.filter(|r| dir.join(&r.key).join(&source.filename).is_file());
    if let (Some(r), Some(sum)) = (&known, &source.checksum)
        && &r.content == sum
    {
        let key = Digest::parse(&format!("sha256:{}", r.key)).ok_or_else(|| {
            crate::store::Error::Other(format!("bad download record {}", record_file.display()))
        })?;
        return Ok((dir.join(&r.key), key));
    }
    runtime.block_on(download(dir, source, known.as_ref()))
}

async fn download(
    dir: &Path,
    source: &HttpSource,
    known: Option<&Record>,
) -> Result<(PathBuf, Digest)> {
    let url = &source.url;
    let client = reqwest::Client::builder()
        .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .build()
        .context("making an HTTP client")?;
    let mut request = client.get(url);
    if let Some(r) = known {
        if let Some(etag) = &r.etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &r.last_modified {
            request = request.header(reqwest::header::IF_MODIFIED_SINCE, lm);
        }
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("downloading {url}"))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_MODIFIED
        && let Some(r) = known
    {
        verify(source, &r.content)?;
        let key = Digest::parse(&format!("sha256:{}", r.key))
            .ok_or_else(|| crate::store::Error::Other(format!("bad download record for {url}")))?;
        return Ok((dir.join(&r.key), key));
    }
    if !status.is_success() {
        bail!("downloading {url}: the server answered {status}");
    }
    let header = |name: reqwest::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = header(reqwest::header::ETAG);
    let last_modified = header(reqwest::header::LAST_MODIFIED);
    let mtime = last_modified
        .as_deref()
        .and_then(|v| httpdate::parse_http_date(v).ok());

    let tmp = dir.join(format!("tmp-{}", rbuild_runner::snapshot::unique_name()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = async {
        let path = tmp.join(&source.filename);
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        let mut hasher = Sha256::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| format!("downloading {url}"))?;
            hasher.update(&chunk);
            file.write_all(&chunk)?;
        }
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let content = Digest::from_hasher(hasher);
        verify(source, &content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        if let Some(t) = mtime {
            file.set_modified(t)?;
        }
        Ok::<_, crate::store::Error>(content)
    }
    .await;
    let content = match result {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let key = key_of(
        &content,
        &source.filename,
        mtime.map(httpdate::fmt_http_date).as_deref(),
    );
    let done = dir.join(key.hex());
    if done.exists() {
        std::fs::remove_dir_all(&tmp)?;
    } else if let Err(e) = std::fs::rename(&tmp, &done) {
        let _ = std::fs::remove_dir_all(&tmp);
        if !done.exists() {
            return Err(e).context("storing a download");
        }
    }
    write_record(
        &record_path(dir, source),
        &Record {
            key: key.hex().to_string(),
            content,
            etag,
            last_modified,
        },
    )?;
    Ok((done, key))
}

fn verify(source: &HttpSource, content: &Digest) -> Result<()> {
    match &source.checksum {
        Some(expected) if expected != content => bail!(
            "checksum mismatch for {}: expected {expected}, downloaded {content}",
            source.url
        ),
        _ => Ok(()),
    }
}

fn write_record(path: &Path, record: &Record) -> Result<()> {
    let dir = path.parent().expect("records live in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}", rbuild_runner::snapshot::unique_name()));
    std::fs::write(
        &tmp,
        serde_json::to_vec(record).context("encoding a download record")?,
    )?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
