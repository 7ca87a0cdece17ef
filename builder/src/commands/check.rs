//! `rbuild check`: verifies the state directory (see `crate::gc::check`).

use crate::Global;
use crate::state::State;
use anyhow::Result;

/// Prints the problems found; returns 1 if there are any.
pub fn run(global: &Global) -> Result<i32> {
    let state = State::open_exclusive(global)?;
    let problems = crate::gc::check(&state)?;
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
