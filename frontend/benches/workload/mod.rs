//! The workload of the parse_lower benchmark, shared with `examples/profile_parse_lower.rs`.

use rbuild_frontend::image::Image;
use rbuild_frontend::{ImageResolver, Platform, ResolvedImage};
use rbuild_solver::Digest;

/// Resolves every image name to an empty image with a PATH.
pub struct AnyImage;

impl ImageResolver for AnyImage {
    fn resolve(&self, reference: &str, _platform: &Platform) -> Result<ResolvedImage, String> {
        let mut image = Image::default();
        image.config.env = Some(vec!["PATH=/usr/bin:/bin".into()]);
        Ok(ResolvedImage {
            reference: reference.into(),
            digest: Digest::of(reference.as_bytes()),
            image,
        })
    }
}

/// 20 stages of 100 instructions: a realistic mix of RUN, COPY, ENV, ARG, WORKDIR, LABEL, with
/// variables, continuations and a COPY --from the previous stage.
pub fn dockerfile() -> String {
    let mut text = String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm\n");
    for stage in 0..20 {
        text.push_str(&format!("FROM ${{BASE}} AS stage{stage}\n"));
        text.push_str(&format!(
            "ARG VERSION={stage}.0\nENV APP=/opt/app{stage} MODE=release\n"
        ));
        for i in 0..96 / 6 {
            text.push_str(&format!(
                "RUN apt-get install -y pkg{i} && \\\n    echo \"${{VERSION}} $APP\" > /tmp/{i}\n"
            ));
            text.push_str(&format!("COPY src/file{i}.txt $APP/data/\n"));
            text.push_str(&format!("ENV STEP{i}=\"value ${{MODE:-debug}} {i}\"\n"));
            text.push_str(&format!("WORKDIR $APP/w{i}\n"));
            text.push_str(&format!(
                "LABEL org.example.step{i}=\"{i}\" org.example.stage=\"{stage}\"\n"
            ));
            if stage > 0 {
                text.push_str(&format!(
                    "COPY --from=stage{} /opt/app{}/data/file{i}.txt ./\n",
                    stage - 1,
                    stage - 1
                ));
            } else {
                text.push_str(&format!("EXPOSE {}\n", 8000 + i));
            }
        }
        text.push_str("CMD [\"/opt/app/run\"]\n");
    }
    text
}
