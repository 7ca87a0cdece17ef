//! `rbuild explain --last`: why the steps of the last build on this root missed the cache,
//! as `rbuild build --explain` printed it (kept in the state directory by every build).

use crate::cli::Global;
use anyhow::{Context, Result, bail};
use rbuild_solver::scheduler::Miss;

/// Arguments of `rbuild explain`.
#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The last build on this root (the only one rbuild remembers)
    #[arg(long, required = true)]
    pub last: bool,
    /// `text`, or `json` (the misses as a list of {name, key, nearest, reasons})
    #[arg(long, default_value = "text")]
    pub format: String,
}

/// Prints the last build's misses.
pub fn run(global: &Global, args: ExplainArgs) -> Result<i32> {
    let path = global.root.join(crate::cli::commands::build::LAST_MISSES);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no build has run on {} yet", global.root.display())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let misses: Vec<Miss> =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    match args.format.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&misses)?),
        "text" => print!("{}", text_of(&misses)),
        other => bail!("--format {other}: expected text or json"),
    }
    Ok(0)
}

fn text_of(misses: &[Miss]) -> String {
    if misses.is_empty() {
        return "every step of the last build came from the cache\n".to_string();
    }
    let mut out = String::new();
    for miss in misses {
        out.push_str(&miss.name);
        out.push('\n');
        for reason in &miss.reasons {
            out.push_str(&format!("  {reason}\n"));
        }
        if let Some(nearest) = &miss.nearest {
            out.push_str(&format!("  (compared with the build of key {nearest})\n"));
        }
    }
    out
}
