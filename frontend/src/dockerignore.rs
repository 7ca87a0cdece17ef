//! `.dockerignore` files: which one applies, and reading its patterns as Docker does
//! (moby/patternmatcher's `ignorefile.ReadAll`). Matching is the solver's
//! (`rbuild_solver::pattern::IgnoreMatcher`), because content hashing and copying apply it.

use std::path::{Path, PathBuf};

/// The ignore file for a build: `<Dockerfile>.dockerignore` next to the Dockerfile if it exists
/// (BuildKit's Dockerfile-specific ignore file), else `.dockerignore` at the context root.
/// Returns the file and its patterns.
pub fn load(context: &Path, dockerfile: &Path) -> std::io::Result<Option<(PathBuf, Vec<String>)>> {
    let mut candidates = Vec::new();
    if let Some(name) = dockerfile.file_name() {
        let mut specific = name.to_os_string();
        specific.push(".dockerignore");
        candidates.push(dockerfile.with_file_name(specific));
    }
    candidates.push(context.join(".dockerignore"));
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let patterns = parse(&String::from_utf8_lossy(&bytes));
                return Ok(Some((path, patterns)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The patterns of an ignore file: `#` comments (only at the very start of a line) and empty
/// lines dropped, whitespace trimmed, each pattern cleaned like a path (`./a/` is `a`, a leading
/// `/` is dropped), `!` kept in front of exceptions.
pub fn parse(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut patterns = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = if pattern.is_empty() {
            String::new()
        } else {
            go_clean(pattern)
        };
        if cleaned.len() > 1 && cleaned.starts_with('/') {
            cleaned.remove(0);
        }
        patterns.push(if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    patterns
}

/// Go's `path.Clean`: lexical cleaning that keeps leading `..` of relative paths.
pub fn go_clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_docker() {
        let text = "\u{feff}# comment\n\n  node_modules/  \n!./keep/me\n/abs/path\n #not-a-comment\n*.log\n../outside\n!\n";
        assert_eq!(
            parse(text),
            [
                "node_modules",
                "!keep/me",
                "abs/path",
                "#not-a-comment",
                "*.log",
                "../outside",
                "!"
            ]
        );
        assert_eq!(go_clean("a//b/./c/.."), "a/b");
        assert_eq!(go_clean("./"), ".");
        assert_eq!(go_clean("/../x"), "/x");
    }

    #[test]
    fn dockerfile_specific_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path();
        std::fs::write(ctx.join(".dockerignore"), "general\n").unwrap();
        std::fs::create_dir(ctx.join("build")).unwrap();
        let dockerfile = ctx.join("build/Prod.Dockerfile");
        assert_eq!(load(ctx, &dockerfile).unwrap().unwrap().1, ["general"]);
        std::fs::write(ctx.join("build/Prod.Dockerfile.dockerignore"), "specific\n").unwrap();
        let (path, patterns) = load(ctx, &dockerfile).unwrap().unwrap();
        assert_eq!(patterns, ["specific"]);
        assert!(path.ends_with("build/Prod.Dockerfile.dockerignore"));
        std::fs::remove_file(ctx.join(".dockerignore")).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(load(ctx, &dockerfile).unwrap().is_none());
    }
}
