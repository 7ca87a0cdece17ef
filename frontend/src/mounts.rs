//! `RUN --mount=…` specs: parsed and validated as BuildKit does (CSV fields of `key=value` or
//! bare boolean keys), before variable expansion of the values.

/// The kind of a RUN mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountType {
    /// Files of a stage, image or the context.
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret file (or environment variable).
    Secret,
    /// An SSH agent socket.
    Ssh,
}

/// One `--mount` of a RUN.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountSpec {
    /// `type` (default `bind`).
    pub kind: Option<MountType>,
    /// `target` / `destination` / `dst` / `dest`.
    pub target: Option<String>,
    /// `source` / `src`.
    pub source: Option<String>,
    /// `from`.
    pub from: Option<String>,
    /// `readonly` / `ro` (or the opposite, `readwrite` / `rw`).
    pub readonly: Option<bool>,
    /// `id`.
    pub id: Option<String>,
    /// `sharing`: shared, private or locked.
    pub sharing: Option<String>,
    /// `mode` (octal).
    pub mode: Option<String>,
    /// `uid`.
    pub uid: Option<String>,
    /// `gid`.
    pub gid: Option<String>,
    /// `size` (tmpfs).
    pub size: Option<String>,
    /// `required` (secret, ssh).
    pub required: Option<bool>,
    /// `env` (secret).
    pub env: Option<String>,
}

impl MountSpec {
    /// The mount's type, `bind` when not given.
    pub fn mount_type(&self) -> MountType {
        self.kind.unwrap_or(MountType::Bind)
    }
}

/// Splits a CSV record as Go's encoding/csv does for one line: commas separate fields, a field
/// that starts with `"` is quoted and `""` inside it is a quote.
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quote in {s:?}")),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field in {s:?}")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
        }
        fields.push(field);
    }
}

fn parse_bool(key: &str, value: Option<&str>) -> Result<bool, String> {
    match value.map(|v| v.to_ascii_lowercase()) {
        None => Ok(true),
        Some(v) if matches!(v.as_str(), "1" | "t" | "true") => Ok(true),
        Some(v) if matches!(v.as_str(), "0" | "f" | "false") => Ok(false),
        Some(v) => Err(format!("invalid value for {key}: {v}")),
    }
}

/// Parses one `--mount` value.
pub fn parse(value: &str) -> Result<MountSpec, String> {
    let mut spec = MountSpec::default();
    for field in csv_fields(value)? {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let need = |v: Option<String>| {
            v.ok_or_else(|| format!("invalid field '{field}' must be a key=value pair"))
        };
        match key.as_str() {
            "type" => {
                let v = need(val)?;
                spec.kind = Some(match v.as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    other => return Err(format!("unsupported mount type \"{other}\"")),
                });
            }
            "target" | "destination" | "dst" | "dest" => spec.target = Some(need(val)?),
            "source" | "src" => spec.source = Some(need(val)?),
            "from" => spec.from = Some(need(val)?),
            "readonly" | "ro" => spec.readonly = Some(parse_bool(&key, val.as_deref())?),
            "readwrite" | "rw" => spec.readonly = Some(!parse_bool(&key, val.as_deref())?),
            "id" => spec.id = Some(need(val)?),
            "sharing" => {
                let v = need(val)?;
                if !matches!(v.as_str(), "shared" | "private" | "locked") {
                    return Err(format!("unsupported sharing value \"{v}\""));
                }
                spec.sharing = Some(v);
            }
            "mode" => spec.mode = Some(need(val)?),
            "uid" => spec.uid = Some(need(val)?),
            "gid" => spec.gid = Some(need(val)?),
            "size" => spec.size = Some(need(val)?),
            "required" => spec.required = Some(parse_bool(&key, val.as_deref())?),
            "env" => spec.env = Some(need(val)?),
            _ => return Err(format!("unexpected key '{key}' in '{field}'")),
        }
    }
    let kind = spec.mount_type();
    let allowed: &[&str] = match kind {
        MountType::Bind => &["target", "source", "from", "readonly"],
        MountType::Cache => &[
            "target", "source", "from", "readonly", "id", "sharing", "mode", "uid", "gid",
        ],
        MountType::Tmpfs => &["target", "size"],
        MountType::Secret => &["target", "id", "mode", "uid", "gid", "required", "env"],
        MountType::Ssh => &["target", "id", "mode", "uid", "gid", "required"],
    };
    let given = [
        ("target", spec.target.is_some()),
        ("source", spec.source.is_some()),
        ("from", spec.from.is_some()),
        ("readonly", spec.readonly.is_some()),
        ("id", spec.id.is_some()),
        ("sharing", spec.sharing.is_some()),
        ("mode", spec.mode.is_some()),
        ("uid", spec.uid.is_some()),
        ("gid", spec.gid.is_some()),
        ("size", spec.size.is_some()),
        ("required", spec.required.is_some()),
        ("env", spec.env.is_some()),
    ];
    let type_name = format!("{kind:?}").to_ascii_lowercase();
    if let Some((key, _)) = given.iter().find(|(k, set)| *set && !allowed.contains(k)) {
        return Err(format!("{key} is not allowed for type={type_name} mounts"));
    }
    let needs_target = matches!(kind, MountType::Bind | MountType::Cache | MountType::Tmpfs);
    if needs_target && spec.target.is_none() {
        return Err(format!("mount type={type_name} requires a target"));
    }
    if matches!(kind, MountType::Secret)
        && spec.id.is_none()
        && spec.target.is_none()
        && spec.env.is_none()
    {
        return Err("mount type=secret requires an id or a target".into());
    }
    if let Some(mode) = &spec.mode
        && !mode.contains('$')
        && u32::from_str_radix(mode, 8).is_err()
    {
        return Err(format!("invalid mode {mode:?}: expected an octal number"));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_like_buildkit() {
        let m = parse("type=cache,target=/root/.cache,sharing=locked,id=go").unwrap();
        assert_eq!(m.mount_type(), MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        let m = parse("target=/src,from=build,rw").unwrap();
        assert_eq!((m.mount_type(), m.readonly), (MountType::Bind, Some(false)));
        let m = parse("type=secret,id=npmrc,required").unwrap();
        assert_eq!(m.required, Some(true));
        let m = parse("\"type=bind\",\"target=/a,b\"").unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
        assert!(
            parse("type=nfs,target=/x")
                .unwrap_err()
                .contains("unsupported mount type")
        );
        assert!(
            parse("type=cache")
                .unwrap_err()
                .contains("requires a target")
        );
        assert!(
            parse("target=/x,colour=blue")
                .unwrap_err()
                .contains("unexpected key 'colour'")
        );
        assert!(
            parse("type=tmpfs,target=/t,from=x")
                .unwrap_err()
                .contains("from is not allowed")
        );
        assert!(
            parse("type=cache,target=/c,mode=999")
                .unwrap_err()
                .contains("octal")
        );
        assert!(parse("type=secret").is_err());
    }
}
