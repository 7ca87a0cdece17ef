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

fn read_passwd(root: &Path) -> Vec<PasswdEntry> {
    let text = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
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
    let text = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_ids_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
        )
        .unwrap();
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
}
