//! `rbuild du`: space used by the state directory, by kind, and how much is reclaimable.

use crate::cli::Global;
use crate::store::gc::{self, Usage};
use anyhow::Result;

/// Output formats of `rbuild du`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table.
    Table,
    /// One JSON object.
    Json,
}

/// Arguments of `rbuild du`.
#[derive(clap::Args)]
pub struct DuArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// Prints the disk usage.
pub fn run(global: &Global, args: DuArgs) -> Result<i32> {
    let state = global.state()?;
    let usage = gc::disk_usage(&state)?;
    let rows: [(&str, Usage); 4] = [
        ("blobs", usage.blobs),
        ("snapshots", usage.snapshots),
        ("cache mounts", usage.cache_mounts),
        ("downloads", usage.downloads),
    ];
    let total = rows.iter().fold(Usage::default(), |acc, (_, u)| Usage {
        size: acc.size + u.size,
        reclaimable: acc.reclaimable + u.reclaimable,
    });
    match args.format {
        Format::Table => {
            println!("{:<14}{:>12}{:>14}", "KIND", "SIZE", "RECLAIMABLE");
            for (name, u) in rows.iter().chain(std::iter::once(&("total", total))) {
                println!(
                    "{name:<14}{:>12}{:>14}",
                    crate::units::human(u.size),
                    crate::units::human(u.reclaimable)
                );
            }
            println!("cache records: {}", usage.records);
        }
        Format::Json => {
            let kind =
                |u: &Usage| serde_json::json!({"size": u.size, "reclaimable": u.reclaimable});
            let mut object = serde_json::Map::new();
            for (name, u) in &rows {
                object.insert(name.replace(' ', "_"), kind(u));
            }
            object.insert("total".into(), kind(&total));
            object.insert("records".into(), usage.records.into());
            println!("{}", serde_json::to_string_pretty(&object)?);
        }
    }
    Ok(0)
}
