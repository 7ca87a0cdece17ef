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
    /// `table` (REPOSITORY TAG IMAGE ID CREATED SIZE) or `json` (one object per line, with
    /// Docker's keys)
    #[arg(long, default_value = "table")]
    pub format: Format,
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

/// Prints rows of cells with columns padded to their widest cell, three spaces apart (as
/// Docker's tabwriter).
pub fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 3));
            }
        }
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

/// Lists every name of every image.
pub fn run(global: &Global, args: ImagesArgs) -> Result<i32> {
    let state = global.state()?;
    let images = local::all(&state)?;
    let mut rows = vec![];
    let mut header = vec!["REPOSITORY", "TAG"];
    if args.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    rows.push(header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for image in &images {
        let created = image.config.created.clone().unwrap_or_default();
        // Measured once per image (it walks the layers' snapshots), not per name.
        let size = human(image.size(&state));
        for name in &image.names {
            let (repo, tag) = repository_and_tag(name);
            let size = size.clone();
            if args.format == Format::Json {
                let seconds = units::epoch_of(&created);
                let at =
                    units::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds));
                // Docker's `--format json` keys and forms.
                let object = serde_json::json!({
                    "Containers": "N/A",
                    "CreatedAt": format!("{} {} +0000 UTC", &at[..10], &at[11..19]),
                    "CreatedSince": units::ago(&created),
                    "Digest": image.manifest.digest.to_string(),
                    "ID": short_id(image, args.no_trunc),
                    "Repository": repo,
                    "SharedSize": "N/A",
                    "Size": size,
                    "Tag": tag,
                    "UniqueSize": "N/A",
                    "VirtualSize": size,
                });
                out(&object.to_string());
                continue;
            }
            let mut row = vec![repo, tag];
            if args.digests {
                row.push(image.manifest.digest.to_string());
            }
            row.extend([short_id(image, args.no_trunc), units::ago(&created), size]);
            rows.push(row);
        }
    }
    if args.format == Format::Table {
        print_table(&rows);
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
