//! `rbuild images`: the tagged images of the local store, like `docker images`.

use crate::cli::Global;
use crate::registry::reference::familiar;
use crate::store::local::{self, LocalImage};
use crate::units;
use crate::units::human;
use anyhow::Result;

/// Arguments of `rbuild images`.
#[derive(clap::Args)]
pub struct ImagesArgs {
    /// Only images of this repository (`app`, `app:1.0`, `ghcr.io/o/app`)
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub repository: Option<String>,
    /// `table` (REPOSITORY TAG IMAGE ID CREATED SIZE), `json` (one object per line, with
    /// Docker's keys), or a Go template as Docker's (`{{.Repository}}:{{.Tag}}`, `table
    /// {{.ID}}\t{{.Size}}`)
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Only image ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Every image (untagged build results are listed anyway, as `<none>`)
    #[arg(short, long)]
    pub all: bool,
    /// Show each image's manifest digest
    #[arg(long)]
    pub digests: bool,
    /// Show full image ids
    #[arg(long)]
    pub no_trunc: bool,
}

/// Output formats of the listing commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON object per line.
    Json,
}

/// `name:tag` → (`name`, `tag`), in the familiar form Docker prints.
pub fn repository_and_tag(name: &str) -> (String, String) {
    let short = familiar(name);
    match short.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
        _ => (short, "<none>".to_string()),
    }
}

/// Prints a line to stdout; a closed stdout (`| head`) ends the output quietly instead of
/// panicking as `println!` does.
pub fn out(line: &str) {
    use std::io::Write;
    if writeln!(std::io::stdout().lock(), "{line}").is_err() {
        std::process::exit(0);
    }
}

/// Columns as Go's `tabwriter` with minwidth 0 and one blank of padding per `pad`: each cell
/// but the last padded to its column's widest plus `pad`.
pub fn columns(rows: &[Vec<String>], pad: usize) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter(|r| c + 1 < r.len())
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if c + 1 < row.len() {
                let fill = widths[c] + pad - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', fill));
            }
        }
        out.push('\n');
    }
    out
}

/// Prints rows of cells with columns padded to their widest cell, three spaces apart (as
/// Docker's tabwriter), without trailing blanks.
pub fn print_table(rows: &[Vec<String>]) {
    for line in columns(rows, 3).lines() {
        out(line.trim_end());
    }
}

/// The short id Docker shows: the first 12 hex digits of the config digest.
pub fn short_id(image: &LocalImage, no_trunc: bool) -> String {
    if no_trunc {
        image.id().to_string()
    } else {
        image.id().hex()[..12].to_string()
    }
}

/// Docker's `images --format json` object of one name (or `<none>`) of `image`.
fn row(image: &LocalImage, name: Option<&str>, size: &str, no_trunc: bool) -> serde_json::Value {
    let created = image.config.created.clone().unwrap_or_default();
    let seconds = units::epoch_of(&created);
    let at = units::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds));
    let (repo, tag) = match name {
        Some(name) => repository_and_tag(name),
        None => ("<none>".to_string(), "<none>".to_string()),
    };
    serde_json::json!({
        "Containers": "N/A",
        "CreatedAt": format!("{} {} +0000 UTC", &at[..10], &at[11..19]),
        "CreatedSince": units::ago(&created),
        "Digest": image.manifest.digest.to_string(),
        "ID": short_id(image, no_trunc),
        "Repository": repo,
        "SharedSize": "N/A",
        "Size": size,
        "Tag": tag,
        "UniqueSize": "N/A",
        "VirtualSize": size,
        "Platforms": image.platforms.join(","),
    })
}

/// Whether a row is of the repository (and tag) `filter` names, as `docker images REPO[:TAG]`.
fn matches(row: &serde_json::Value, filter: &str) -> bool {
    let (repo, tag) = repository_and_tag(filter);
    let explicit_tag = familiar(filter)
        .rsplit_once(':')
        .is_some_and(|(_, t)| !t.contains('/'));
    row["Repository"] == repo.as_str() && (!explicit_tag || row["Tag"] == tag.as_str())
}

/// Docker's column header of a template field.
fn header(field: &str) -> String {
    match field {
        "ID" => "IMAGE ID".into(),
        "CreatedSince" => "CREATED".into(),
        "CreatedAt" => "CREATED AT".into(),
        other => other.to_uppercase(),
    }
}

/// Lists every name of every image, newest first, as `docker images`.
pub fn run(global: &Global, args: ImagesArgs) -> Result<i32> {
    let state = global.state()?;
    let mut images = local::all(&state)?;
    images.sort_by_key(|i| {
        std::cmp::Reverse(units::epoch_of(i.config.created.as_deref().unwrap_or("")))
    });
    let mut rows = Vec::new();
    for image in &images {
        // Measured once per image (it walks the layers' snapshots), not per name.
        let size = human(image.size(&state));
        if image.names.is_empty() {
            rows.push(row(image, None, &size, args.no_trunc));
        }
        for name in &image.names {
            rows.push(row(image, Some(name), &size, args.no_trunc));
        }
    }
    if let Some(filter) = &args.repository {
        rows.retain(|r| matches(r, filter));
    }
    if args.quiet {
        for r in &rows {
            out(r["ID"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    match args.format.as_str() {
        "json" => rows.iter().for_each(|r| out(&r.to_string())),
        "table" => {
            let mut header = vec!["REPOSITORY", "TAG"];
            if args.digests {
                header.push("DIGEST");
            }
            header.extend(["IMAGE ID", "CREATED", "SIZE"]);
            // Multi-platform images (an index per name) say which platforms they hold.
            let platforms = rows.iter().any(|r| r["Platforms"] != "");
            if platforms {
                header.push("PLATFORMS");
            }
            let mut table = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
            for r in &rows {
                let mut keys = vec!["Repository", "Tag"];
                if args.digests {
                    keys.push("Digest");
                }
                keys.extend(["ID", "CreatedSince", "Size"]);
                if platforms {
                    keys.push("Platforms");
                }
                table.push(
                    keys.iter()
                        .map(|k| r[*k].as_str().unwrap_or_default().to_string())
                        .collect(),
                );
            }
            print_table(&table);
        }
        template => {
            let (table, template) = match template.strip_prefix("table ") {
                Some(t) => (true, t),
                None => (false, template),
            };
            let mut lines: Vec<Vec<String>> = Vec::new();
            if table {
                lines.push(
                    crate::cli::template::fields(template)
                        .iter()
                        .map(|f| header(f))
                        .collect(),
                );
            }
            for r in &rows {
                let text = crate::cli::template::render(template, r).map_err(anyhow::Error::msg)?;
                lines.push(text.split('\t').map(str::to_string).collect());
            }
            match table {
                true => print_table(&lines),
                false => lines.iter().for_each(|l| out(&l.join("\t"))),
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_split_like_docker() {
        assert_eq!(
            super::repository_and_tag("docker.io/library/hello:1.0"),
            ("hello".to_string(), "1.0".to_string())
        );
        assert_eq!(
            super::repository_and_tag("127.0.0.1:5000/demo/app:2"),
            ("127.0.0.1:5000/demo/app".to_string(), "2".to_string())
        );
    }
}
