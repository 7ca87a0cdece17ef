//! Whether rbuild runs as real root or as root of a user namespace (rootless).
//!
//! Rootless changes one thing in the on-disk snapshot format: overlayfs in a user namespace
//! reads its markers from `user.overlay.*` extended attributes (mount option `userxattr`),
//! because `trusted.*` ones need real root. Whiteouts (0/0 character devices) are the same:
//! the kernel lets anyone create those.

use std::sync::OnceLock;

static IN_USERNS: OnceLock<bool> = OnceLock::new();
static FULL_MAPPING: OnceLock<bool> = OnceLock::new();

/// Whether this process is in a user namespace other than the initial one. Decided once (call
/// it before forking; children only read the cached answer).
pub fn in_user_namespace() -> bool {
    *IN_USERNS.get_or_init(|| {
        // The initial namespace maps every id to itself: "0 0 4294967295".
        match std::fs::read_to_string("/proc/self/uid_map") {
            Ok(map) => {
                let fields: Vec<&str> = map.split_whitespace().collect();
                fields != ["0", "0", "4294967295"]
            }
            Err(_) => false,
        }
    })
}

/// Whether files can be given any owner an image uses: as real root, or in a user namespace
/// that maps at least 65,536 ids (subordinate ids). With only the user's own id mapped,
/// ownership from layers is not applied (everything belongs to the user, root inside), as
/// rootless Podman does without subordinate ids. Decided once, like [`in_user_namespace`].
pub fn owners_preserved() -> bool {
    *FULL_MAPPING.get_or_init(|| {
        if !in_user_namespace() {
            return true;
        }
        let mapped: u64 = std::fs::read_to_string("/proc/self/uid_map")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
            .sum();
        mapped >= 65_536
    })
}

/// The namespace of overlayfs's extended attributes here: `trusted.overlay.` as real root,
/// `user.overlay.` in a user namespace.
pub fn overlay_xattr_prefix() -> &'static str {
    if in_user_namespace() {
        "user.overlay."
    } else {
        "trusted.overlay."
    }
}

/// Extra overlay mount options for this process (`userxattr` in a user namespace).
pub fn overlay_mount_options() -> &'static str {
    if in_user_namespace() {
        ",userxattr"
    } else {
        ""
    }
}

/// Whether `name` is one of overlayfs's own attributes (either namespace), which are never
/// part of a layer.
pub fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}
