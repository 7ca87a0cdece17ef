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
