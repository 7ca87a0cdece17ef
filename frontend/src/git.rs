//! Git URLs as BuildKit recognizes them (`dfgitutil.ParseGitRef`), for `ADD`, the build
//! context and `--build-context`: `git://…`, `ssh://…`, `git@host:path`, `http(s)://…` whose
//! path ends in `.git`, and `github.com/…`; a `#ref[:subdir]` fragment, or the query form
//! `?ref=…&subdir=…&checksum=…&keep-git-dir=true`.

/// A parsed git URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GitUrl {
    /// What `git clone` is given.
    pub remote: String,
    /// A branch, tag or commit.
    pub reference: Option<String>,
    /// The directory of the repository wanted.
    pub subdir: Option<String>,
    /// `checksum=` of the query form.
    pub checksum: Option<String>,
    /// `keep-git-dir=` of the query form.
    pub keep_git_dir: Option<bool>,
}

/// The git URL `text` is, if it is one.
pub fn parse(text: &str) -> Option<GitUrl> {
    let (rest, fragment) = match text.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (text, None),
    };
    let (remote, query) = match rest.split_once('?') {
        Some((r, q)) if !rest.starts_with("git@") || r.contains(':') => (r, Some(q)),
        _ => (rest, None),
    };
    let http = remote.starts_with("http://") || remote.starts_with("https://");
    let git = remote.starts_with("git://")
        || remote.starts_with("ssh://")
        || (remote.starts_with("git@") && remote.contains(':'))
        || (http && remote.trim_end_matches('/').ends_with(".git"))
        || remote.starts_with("github.com/");
    if !git {
        return None;
    }
    let mut url = GitUrl {
        remote: match remote.strip_prefix("github.com/") {
            Some(path) => format!("https://github.com/{path}"),
            None => remote.to_string(),
        },
        ..GitUrl::default()
    };
    if let Some(f) = fragment {
        let (r, s) = f.split_once(':').unwrap_or((f, ""));
        url.reference = (!r.is_empty()).then(|| r.to_string());
        url.subdir = (!s.is_empty()).then(|| s.to_string());
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = (!v.is_empty()).then(|| v.to_string());
        match k {
            "ref" | "tag" | "branch" => url.reference = v.or(url.reference),
            "subdir" => url.subdir = v.or(url.subdir),
            "checksum" | "commit" => url.checksum = v,
            "keep-git-dir" => url.keep_git_dir = v.map(|v| v == "true" || v == "1"),
            _ => {}
        }
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls_as_buildkit_recognizes_them() {
        let g = parse("https://example.com/org/repo.git#v1.2:sub/dir").unwrap();
        assert_eq!(g.remote, "https://example.com/org/repo.git");
        assert_eq!(
            (g.reference.as_deref(), g.subdir.as_deref()),
            (Some("v1.2"), Some("sub/dir"))
        );
        assert_eq!(
            parse("git@github.com:org/repo.git").unwrap().remote,
            "git@github.com:org/repo.git"
        );
        let g = parse("github.com/org/repo#main").unwrap();
        assert_eq!(
            (g.remote.as_str(), g.reference.as_deref()),
            ("https://github.com/org/repo", Some("main"))
        );
        assert_eq!(
            parse("git://host/repo#:docs").unwrap().subdir.as_deref(),
            Some("docs")
        );
        let q = parse("https://h/r.git?ref=v2&subdir=app&checksum=abc&keep-git-dir=true").unwrap();
        assert_eq!(q.reference.as_deref(), Some("v2"));
        assert_eq!(
            (q.subdir.as_deref(), q.checksum.as_deref()),
            (Some("app"), Some("abc"))
        );
        assert_eq!(q.keep_git_dir, Some(true));
        assert_eq!(parse("https://example.com/ctx.tar.gz"), None);
        assert_eq!(parse("https://example.com/repo"), None);
        assert_eq!(parse("./local/dir"), None);
    }
}
