//! `rbuild check`: verifies the state directory (see `crate::store::gc::check`).

use crate::cli::Global;
use anyhow::Result;

/// Prints the problems found; returns 1 if there are any.
pub fn run(global: &Global) -> Result<i32> {
    let state = global.state_exclusive()?;
    let problems = crate::store::gc::check(&state)?;
    for p in &problems {
        println!("{p}");
    }
    let stopped: Vec<_> = crate::store::containers::list(&state.root)
        .into_iter()
        .filter(|c| !c.running)
        .collect();
    if !stopped.is_empty() {
        let size: u64 = stopped
            .iter()
            .map(|c| crate::store::gc::tree_size(&c.dir))
            .sum();
        println!(
            "note: {} stopped container{} in {} ({}), kept by rbuild run without --rm or left by a \
             killed one: rbuild prune removes them",
            stopped.len(),
            if stopped.len() == 1 { "" } else { "s" },
            state.root.join("containers").display(),
            crate::units::human(size)
        );
    }
    if problems.is_empty() {
        println!("state directory {} is consistent", state.root.display());
        Ok(0)
    } else {
        println!(
            "{} problem{} found",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        Ok(1)
    }
}
