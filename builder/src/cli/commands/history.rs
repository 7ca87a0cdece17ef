//! `rbuild history IMAGE`: the steps that made an image, newest first, like
//! `docker image history`.

use crate::cli::Global;
use crate::cli::commands::images::{Format, print_table, short_id};
use crate::store::local;
use crate::units;
use crate::units::human;
use anyhow::Result;

/// Arguments of `rbuild history`.
#[derive(clap::Args)]
pub struct HistoryArgs {
    /// The image (name, id or digest)
    pub image: String,
    /// Do not shorten ids and instructions
    #[arg(long)]
    pub no_trunc: bool,
    /// `table` or `json` (one object per line, with Docker's keys)
    #[arg(long, default_value = "table")]
    pub format: Format,
}

/// Shortens `text` to `width` characters, ending in `…`, as Docker does.
fn ellipsis(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut short: String = text.chars().take(width - 1).collect();
    short.push('…');
    short
}

/// Prints IMAGE, CREATED, CREATED BY, SIZE and COMMENT per history entry.
pub fn run(global: &Global, args: HistoryArgs) -> Result<i32> {
    let state = global.state()?;
    let image = local::find(&state, &args.image)?;
    let mut sizes = image.layer_sizes(&state).into_iter();
    // Entries with a layer take the layers' sizes in order.
    let mut entries: Vec<(&rbuild_frontend::image::History, u64)> = image
        .config
        .history
        .iter()
        .map(|h| {
            let size = if h.empty_layer {
                0
            } else {
                sizes.next().unwrap_or(0)
            };
            (h, size)
        })
        .collect();
    entries.reverse();
    let mut rows = vec![
        ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>(),
    ];
    for (i, (entry, size)) in entries.iter().enumerate() {
        let id = if i == 0 {
            short_id(&image, args.no_trunc)
        } else {
            "<missing>".to_string()
        };
        let created = entry.created.clone().unwrap_or_default();
        let created_by = entry.created_by.clone().unwrap_or_default();
        let comment = entry.comment.clone().unwrap_or_default().to_string();
        if args.format == Format::Json {
            let object = serde_json::json!({
                "Comment": comment,
                "CreatedAt": created,
                "CreatedBy": created_by,
                "CreatedSince": units::ago(&created),
                "ID": id,
                "Size": human(*size),
            });
            crate::cli::commands::images::out(&object.to_string());
            continue;
        }
        let created_by = if args.no_trunc {
            created_by
        } else {
            ellipsis(&created_by, 45)
        };
        rows.push(vec![
            id,
            units::ago(&created),
            created_by,
            human(*size),
            comment,
        ]);
    }
    if args.format == Format::Table {
        print_table(&rows);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_instructions_end_in_an_ellipsis() {
        let long = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        assert_eq!(
            super::ellipsis(long, 45),
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr…"
        );
        assert_eq!(super::ellipsis("CMD [\"sh\"]", 45), "CMD [\"sh\"]");
    }
}
