//! `rbuild images`: the tagged images of the local store.

use crate::Global;
use crate::reference::familiar;
use crate::state::State;
use crate::store::REF_NAME;
use anyhow::Result;

/// `1.9MB`-style sizes, as Docker prints them (powers of 1000).
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + units[unit]
    }
}

/// Prints REPOSITORY, TAG, IMAGE ID, CREATED and SIZE (compressed layers) of every tag.
pub fn run(global: &Global) -> Result<i32> {
    let state = State::open(global)?;
    let store = &state.store;
    println!(
        "{:<40} {:<16} {:<14} {:<22} SIZE",
        "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
    );
    for entry in store.index()?.manifests {
        let Some(name) = entry.annotations.get(REF_NAME) else {
            continue;
        };
        let short = familiar(name);
        let (repo, tag) = match short.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
            _ => (short.clone(), "<none>".to_string()),
        };
        let manifest = store.manifest(&entry.digest)?;
        let config: serde_json::Value =
            serde_json::from_slice(&store.read_blob(&manifest.config.digest)?)?;
        let created = config["created"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(19)
            .collect::<String>();
        let size: u64 = manifest.layers.iter().map(|l| l.size).sum::<u64>() + manifest.config.size;
        println!(
            "{repo:<40} {tag:<16} {:<14} {created:<22} {}",
            &manifest.config.digest.hex()[..12],
            human_size(size)
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_like_docker() {
        assert_eq!(super::human_size(512), "512B");
        assert_eq!(super::human_size(1_980_000), "1.98MB");
        assert_eq!(super::human_size(2_000), "2kB");
    }
}
