//! `rbuild inspect IMAGE…`: an image's details as JSON, like `docker image inspect`.

use crate::cli::Global;
use crate::registry::reference::familiar;
use crate::store::local;
use anyhow::Result;

/// Arguments of `rbuild inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The images (names, ids or digests)
    #[arg(required = true)]
    pub images: Vec<String>,
    /// A Go template as Docker's, per image (`{{.Id}}`, `{{json .Config.Env}}`,
    /// `{{index .RepoTags 0}}`)
    #[arg(short, long)]
    pub format: Option<String>,
}

/// Prints a JSON array with one object per image, with Docker's keys.
pub fn run(global: &Global, args: InspectArgs) -> Result<i32> {
    let state = global.state()?;
    let mut out = Vec::new();
    for arg in &args.images {
        let image = local::find(&state, arg)?;
        let config = &image.config;
        out.push(serde_json::json!({
            "Id": image.id().to_string(),
            "RepoTags": image.names.iter().map(|n| familiar(n)).collect::<Vec<_>>(),
            "RepoDigests": image
                .names
                .iter()
                .map(|n| {
                    let (repo, _) = crate::cli::commands::images::repository_and_tag(n);
                    format!("{repo}@{}", image.manifest.digest)
                })
                .collect::<Vec<_>>(),
            "Parent": "",
            "Comment": config.history.last().and_then(|h| h.comment.clone()).unwrap_or_default(),
            "Created": config.created.clone().unwrap_or_default(),
            "DockerVersion": "",
            "Author": config.author.clone().unwrap_or_default(),
            "Config": config.config,
            "Architecture": config.architecture,
            "Os": config.os,
            "Size": image.size(&state),
            "RootFS": {"Type": "layers", "Layers": config.rootfs.diff_ids},
            "Descriptor": {
                "mediaType": image.manifest.media_type,
                "digest": image.manifest.digest.to_string(),
                "size": image.manifest.size,
            },
        }));
    }
    if let Some(template) = &args.format {
        for image in &out {
            let text = crate::cli::template::render(template, image).map_err(anyhow::Error::msg)?;
            crate::cli::commands::images::out(&text);
        }
        return Ok(0);
    }
    crate::cli::commands::images::out(&serde_json::to_string_pretty(&out)?);
    Ok(0)
}
