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

    /// Whether the process may not write to the mount: as given, else BuildKit's default
    /// (writable for cache and tmpfs mounts, read-only for the others).
    pub fn is_readonly(&self) -> bool {
        self.readonly.unwrap_or(!matches!(
            self.mount_type(),
            MountType::Cache | MountType::Tmpfs
        ))
    }
}

impl MountType {
    /// The name used in `type=`.
    pub fn name(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// Parses a size as Docker's `units.RAMInBytes` does: a decimal number with an optional
/// binary unit (`b`, `k`, `m`, `g`, `t`, `p`, optionally followed by `b` or `ib`,
/// case-insensitive), e.g. `64m` or `1.5GiB`.
pub fn parse_ram_size(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size: '{s}'");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(&unit);
    let shift = match unit {
        "" | "b" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
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
                let v = need(val)?.to_ascii_lowercase();
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
                let v = need(val)?.to_ascii_lowercase();
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
    // The checks BuildKit makes (`validateMount`); other keys that do not apply to a type are
    // accepted and ignored, as BuildKit ignores them.
    let kind = spec.mount_type();
    let type_name = kind.name();
    if !matches!(kind, MountType::Secret | MountType::Ssh | MountType::Cache) {
        for (key, set) in [
            ("mode", spec.mode.is_some()),
            ("uid", spec.uid.is_some()),
            ("gid", spec.gid.is_some()),
        ] {
            if set {
                return Err(format!("{key} not allowed for \"{type_name}\" type mounts"));
            }
        }
    }
    if spec.sharing.is_some() && kind != MountType::Cache {
        return Err(format!("invalid cache sharing set for {type_name} mount"));
    }
    if spec.required.is_some() && !matches!(kind, MountType::Secret | MountType::Ssh) {
        return Err(format!(
            "unexpected key 'required' for mount type '{type_name}'"
        ));
    }
    if spec.size.is_some() && kind != MountType::Tmpfs {
        return Err(format!(
            "unexpected key 'size' for mount type '{type_name}'"
        ));
    }
    if spec.env.is_some() && kind != MountType::Secret {
        return Err(format!("unexpected key 'env' for mount type '{type_name}'"));
    }
    let needs_target = matches!(kind, MountType::Bind | MountType::Cache | MountType::Tmpfs);
    if needs_target && spec.target.is_none() {
        return Err(format!("mount type={type_name} requires a target"));
    }
    if kind == MountType::Secret {
        if spec.from.is_some() {
            return Err("secret mount should not have a from".into());
        }
        if spec.source.is_none() && spec.target.is_none() && spec.id.is_none() && spec.env.is_none()
        {
            return Err("invalid secret mount. one of source, target required".into());
        }
        if spec.source.is_some() && spec.id.is_some() {
            return Err("both source and id can't be set".into());
        }
    }
    if kind == MountType::Ssh && spec.source.is_some() {
        return Err("ssh does not support source".into());
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
        // BuildKit ignores keys that do not apply, except these.
        assert!(parse("type=tmpfs,target=/t,from=x").is_ok());
        assert!(
            parse("type=bind,target=/t,mode=0700")
                .unwrap_err()
                .contains("mode not allowed for \"bind\" type mounts")
        );
        assert!(
            parse("type=bind,target=/t,sharing=locked")
                .unwrap_err()
                .contains("invalid cache sharing set for bind mount")
        );
        assert!(
            parse("type=cache,target=/t,size=1m")
                .unwrap_err()
                .contains("unexpected key 'size' for mount type 'cache'")
        );
        assert!(
            parse("type=secret,source=a,id=b")
                .unwrap_err()
                .contains("both source and id")
        );
        assert!(
            parse("type=secret,from=x,id=b")
                .unwrap_err()
                .contains("should not have a from")
        );
        assert!(parse("type=ssh,source=x").is_err());
        assert!(parse("type=secret,env=TOKEN").is_ok());
        assert!(parse("target=/x").unwrap().is_readonly());
        assert!(!parse("type=cache,target=/x").unwrap().is_readonly());
        assert!(parse("type=cache,target=/x,ro").unwrap().is_readonly());
        assert!(
            parse("type=cache,target=/c,mode=999")
                .unwrap_err()
                .contains("octal")
        );
        assert!(parse("type=secret").is_err());
    }

    #[test]
    fn sizes_like_docker_units() {
        assert_eq!(parse_ram_size("1024"), Ok(1024));
        assert_eq!(parse_ram_size("64m"), Ok(64 << 20));
        assert_eq!(parse_ram_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_ram_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_ram_size("1.5k"), Ok(1536));
        assert!(parse_ram_size("lots").is_err());
        assert!(parse_ram_size("10x").is_err());
    }
}
