//! `rbuild prune`: removes build cache, never what a tagged image needs.

use crate::cli::Global;
use crate::store::gc::{self, PruneOptions};
use anyhow::{Result, anyhow, bail};

/// Arguments of `rbuild prune`.
#[derive(clap::Args)]
pub struct PruneArgs {
    /// Also remove cache mounts, and cache records whose layers tagged images use
    #[arg(short, long)]
    pub all: bool,
    /// Remove least recently used cache only until it takes at most SIZE (e.g. 10GB)
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// `until=DURATION`: keep cache used within DURATION (e.g. until=24h)
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
}

/// Prunes; prints what was freed.
pub fn run(global: &Global, args: PruneArgs) -> Result<i32> {
    let mut options = PruneOptions {
        all: args.all,
        ..PruneOptions::default()
    };
    if let Some(size) = &args.keep_storage {
        options.keep_storage = Some(
            rbuild_frontend::mounts::parse_ram_size(size)
                .map_err(|e| anyhow!("--keep-storage: {e}"))?,
        );
    }
    for filter in &args.filter {
        match filter.split_once('=') {
            Some(("until", value)) => {
                options.keep_recent =
                    Some(crate::units::parse_duration(value).ok_or_else(|| {
                        anyhow!("--filter until={value}: expected a duration such as 24h or 90m")
                    })?);
            }
            _ => bail!("unsupported --filter {filter:?} (supported: until=DURATION)"),
        }
    }
    let state = global.state_exclusive()?;
    let mut pruned = gc::prune(&state, &options)?;
    let (containers, freed) = crate::store::containers::remove_stopped(&state.root)
        .map_err(|e| anyhow!("removing stopped containers: {e}"))?;
    pruned.freed += freed;
    if containers > 0 {
        println!(
            "Removed {containers} stopped container{}",
            if containers == 1 { "" } else { "s" }
        );
    }
    println!(
        "Removed {} cache record{}; total reclaimed space: {}",
        pruned.records,
        if pruned.records == 1 { "" } else { "s" },
        crate::units::human(pruned.freed)
    );
    Ok(0)
}
