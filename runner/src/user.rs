//! Resolving `USER` and `--chown` specs (`name`, `uid`, `name:group`, `uid:gid`) against the
//! `/etc/passwd` and `/etc/group` of a container's root filesystem, as runc and BuildKit do.

use std::path::Path;

/// A resolved user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids of a process, as runc sets them.
    pub groups: Vec<u32>,
    /// Home directory from `/etc/passwd` (`/` if unknown).
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// A file of the root filesystem `root`, its symlinks resolved inside it; empty if missing.
fn read_in_root(root: &Path, path: &str) -> String {
    rbuild_solver::contenthash::resolve_in_root(root, path, true)
        .and_then(std::fs::read_to_string)
        .unwrap_or_default()
}

fn read_passwd(root: &Path) -> Vec<PasswdEntry> {
    let text = read_in_root(root, "etc/passwd");
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).copied().unwrap_or("/").to_string(),
            })
        })
        .collect()
}

fn read_group(root: &Path) -> Vec<GroupEntry> {
    let text = read_in_root(root, "etc/group");
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `spec` inside `root`. An empty spec is root. A numeric uid that `/etc/passwd` does
/// not know gets gid 0; a user name it does not know is an error.
pub fn resolve(root: &Path, spec: &str) -> Result<User, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_passwd(root);
    let (uid, mut gid, name, home) = if user_part.is_empty() {
        (0, 0, Some("root".to_string()), "/root".to_string())
    } else if let Ok(uid) = user_part.parse::<u32>() {
        match passwd.iter().find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, Some(e.name.clone()), e.home.clone()),
            None => (uid, 0, None, "/".to_string()),
        }
    } else {
        match passwd.iter().find(|e| e.name == user_part) {
            Some(e) => (e.uid, e.gid, Some(e.name.clone()), e.home.clone()),
            None => {
                return Err(format!(
                    "unable to find user {user_part}: no matching entries in passwd file"
                ));
            }
        }
    };
    let groups_file = read_group(root);
    if let Some(g) = group_part {
        gid = if let Ok(gid) = g.parse::<u32>() {
            gid
        } else {
            groups_file
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?
        };
    }
    // Supplementary groups as BuildKit computes them: none for numeric `uid:gid` (its fast
    // path), the named group for `user:group`, else the groups listing the user as a member.
    let numeric =
        user_part.parse::<u32>().is_ok() && group_part.is_some_and(|g| g.parse::<u32>().is_ok());
    let groups = if numeric {
        vec![]
    } else if group_part.is_some() {
        vec![gid]
    } else {
        name.as_ref()
            .map(|name| {
                groups_file
                    .iter()
                    .filter(|g| g.members.iter().any(|m| m == name))
                    .map(|g| g.gid)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(User {
        uid,
        gid,
        groups,
        home,
    })
}

/// The owner (uid, gid) of files that `COPY --chown=spec`, `ADD --chown` or a WORKDIR under
/// `USER` creates, resolved against `root` (the filesystem the files land on) as BuildKit's
/// file operations do, which differs from [`resolve`] for a process: a number (or `root`)
/// without a group is also the gid; a name without a group takes the user's primary group; a
/// name that `/etc/passwd` (or `/etc/group`) does not list is not an error: the user is
/// 0:0, the group keeps the user's gid.
pub fn resolve_chown(root: &Path, spec: &str) -> (u32, u32) {
    // As Go's strconv.ParseInt(s, 10, 32), which BuildKit uses; -1 means "unchanged" to chown.
    let id = |s: &str| match s {
        "root" => Some(0),
        s => s.parse::<i32>().ok().map(|n| n as u32),
    };
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, mut gid) = match id(user_part) {
        Some(n) => (n, n),
        None => read_passwd(root)
            .iter()
            .find(|e| e.name == user_part)
            .map_or((0, 0), |e| (e.uid, e.gid)),
    };
    if let Some(g) = group_part {
        match id(g) {
            Some(n) => gid = n,
            None => {
                if let Some(e) = read_group(root).iter().find(|e| e.name == g) {
                    gid = e.gid;
                }
            }
        }
    }
    (uid, gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root filesystem with these `/etc/passwd` and `/etc/group`.
    fn root_with(passwd: &str, group: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(dir.path().join("etc/group"), group).unwrap();
        dir
    }

    #[test]
    fn resolves_names_ids_and_groups() {
        let dir = root_with(
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            "root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
        );
        let r = dir.path();
        assert_eq!(resolve(r, "").unwrap().uid, 0);
        let app = resolve(r, "app").unwrap();
        assert_eq!(
            (app.uid, app.gid, app.home.as_str()),
            (1000, 1000, "/home/app")
        );
        assert_eq!(app.groups, [10], "member of wheel");
        assert!(
            resolve(r, "root").unwrap().groups.is_empty(),
            "no memberships: none"
        );
        assert_eq!(
            resolve(r, "app:app").unwrap().groups,
            [1000],
            "a named group: that one"
        );
        assert!(
            resolve(r, "1000:1000").unwrap().groups.is_empty(),
            "numeric uid:gid: none"
        );
        assert_eq!(resolve(r, "app:wheel").unwrap().gid, 10);
        let unknown = resolve(r, "4242").unwrap();
        assert_eq!((unknown.uid, unknown.gid), (4242, 0));
        assert_eq!(resolve(r, "5:6").unwrap().gid, 6);
        assert!(
            resolve(r, "nobody")
                .unwrap_err()
                .contains("unable to find user nobody")
        );
        assert!(resolve(r, "app:nogroup").is_err());
    }

    #[test]
    fn resolves_chown_as_buildkits_file_operations() {
        let dir = root_with(
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
            "app:x:1001:\nwheel:x:10:app\n",
        );
        let r = dir.path();
        assert_eq!(
            resolve_chown(r, "4242"),
            (4242, 4242),
            "a number is the gid too"
        );
        assert_eq!(
            resolve_chown(r, "1000"),
            (1000, 1000),
            "even one passwd lists"
        );
        assert_eq!(
            resolve_chown(r, "app"),
            (1000, 1001),
            "a name: its primary group"
        );
        assert_eq!(resolve_chown(r, "app:wheel"), (1000, 10));
        assert_eq!(resolve_chown(r, "app:7"), (1000, 7));
        assert_eq!(resolve_chown(r, "root"), (0, 0));
        assert_eq!(
            resolve_chown(r, "nobody"),
            (0, 0),
            "an unknown name is root"
        );
        assert_eq!(
            resolve_chown(r, "app:nogroup"),
            (1000, 1001),
            "keeps the user's"
        );
        assert_eq!(resolve_chown(r, "5:wheel"), (5, 10));
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(resolve_chown(empty.path(), "app:wheel"), (0, 0));
    }
}
