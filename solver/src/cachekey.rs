//! Cache keys: what identifies the output of a step across builds.
//!
//! `key(v) = sha256(version, op definition, key of each input, content digest)`. The op
//! definition leaves out what cannot change the output (an image's reference name next to its
//! digest; progress names are not in ops at all). For a local source the content digest is
//! [`crate::contenthash::hash_local`] of the files it selects, so editing one file only
//! invalidates the steps that read it.

use crate::digest::Digest;
use crate::ops::Op;

/// Bump when the meaning of a cached output changes, so old records are never reused.
const VERSION: &str = "rbuild-cache-key-v2";

/// The cache key of a vertex with this op, input keys and (for local sources) content digest.
pub fn compute(op: &Op, inputs: &[Digest], content: Option<&Digest>) -> Digest {
    let definition = match op {
        // The manifest digest pins the content; the name it was found under does not matter.
        Op::Image(image) => serde_json::json!({ "op": "image", "digest": image.digest }),
        // The commit (the content) pins it; where it was cloned from does not matter.
        Op::Git(git) => serde_json::json!({
            "op": "git",
            "subdir": git.subdir,
            "keep_git_dir": git.keep_git_dir,
        }),
        other => serde_json::to_value(other).expect("ops serialize"),
    };
    #[derive(serde::Serialize)]
    struct Key<'a> {
        v: &'static str,
        op: serde_json::Value,
        inputs: &'a [Digest],
        content: Option<&'a Digest>,
    }
    Digest::of_json(&Key {
        v: VERSION,
        op: definition,
        inputs,
        content,
    })
}

/// The key of a vertex as the solver gives it, in `solve` and `plan` alike: sources (scratch,
/// local directories, downloads) keyed by their content and never salted; every step that
/// makes layers salted with `salt`. Anything that predicts keys must use this.
pub fn of_vertex(
    op: &Op,
    inputs: &[Digest],
    content: Option<&Digest>,
    salt: Option<&str>,
) -> Digest {
    let key = compute(op, inputs, content);
    match op {
        Op::Scratch | Op::Local(_) | Op::Http(_) | Op::Git(_) => key,
        _ => salted(key, salt),
    }
}

/// `key` with `salt` mixed in, if any: the key of a layer-making step under a build setting
/// that changes its layers without being part of its op (see
/// [`crate::Solver::with_key_salt`]). Anything that predicts the solver's keys must salt
/// them the same way.
pub fn salted(key: Digest, salt: Option<&str>) -> Digest {
    match salt {
        Some(salt) => Digest::of(format!("{key} {salt}").as_bytes()),
        None => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{ImageSource, LocalSource};

    #[test]
    fn image_key_ignores_the_reference_name() {
        let digest = Digest::of(b"manifest");
        let a = Op::Image(ImageSource {
            reference: "docker.io/library/busybox:latest".into(),
            digest: digest.clone(),
        });
        let b = Op::Image(ImageSource {
            reference: "registry.local/busybox:1".into(),
            digest,
        });
        assert_eq!(compute(&a, &[], None), compute(&b, &[], None));
    }

    #[test]
    fn content_and_inputs_change_the_key() {
        let op = Op::Local(LocalSource {
            name: "context".into(),
            include: vec!["a".into()],
            ..LocalSource::default()
        });
        let c1 = Digest::of(b"1");
        let c2 = Digest::of(b"2");
        assert_ne!(compute(&op, &[], Some(&c1)), compute(&op, &[], Some(&c2)));
        assert_ne!(
            compute(&Op::Scratch, std::slice::from_ref(&c1), None),
            compute(&Op::Scratch, &[c2], None)
        );
        assert_eq!(compute(&op, &[], Some(&c1)), compute(&op, &[], Some(&c1)));
    }

    #[test]
    fn salt_changes_keys_only_when_given() {
        let key = Digest::of(b"k");
        assert_eq!(salted(key.clone(), None), key);
        let a = salted(key.clone(), Some("SOURCE_DATE_EPOCH=1"));
        assert_ne!(a, key);
        assert_ne!(a, salted(key, Some("SOURCE_DATE_EPOCH=2")));
    }
}
