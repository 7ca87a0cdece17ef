//! Docker's `--format` templates (Go's text/template, the part people write in scripts) over
//! the JSON object a command prints: `{{.Field}}`, `{{.A.B}}`, `{{.}}`, `{{json .X}}`,
//! `{{index .List 0}}`, `{{upper .X}}`, `{{lower .X}}`, `{{join .List ","}}`, and `\t`/`\n`
//! escapes. Values print as Go prints them (`[a b]`, `map[k:v]`, `<no value>`).

use serde_json::Value;

/// Renders `template` with `value` as `.`.
pub fn render(template: &str, value: &Value) -> Result<String, String> {
    let template = template.replace("\\t", "\t").replace("\\n", "\n");
    let mut out = String::new();
    let mut rest = template.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("template {template:?}: an action is not closed (}}}})"))?;
        let action = after[..end].trim().trim_matches('-').trim();
        out.push_str(&action_value(action, value).map_err(|e| format!("template: {e}"))?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The fields an action names at the top level (`{{.Repository}}` → `Repository`), in order,
/// for a table's header.
pub fn fields(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let words: Vec<&str> = after[..end].split_whitespace().collect();
        if let Some(path) = words.iter().find(|w| w.starts_with('.') && w.len() > 1) {
            out.push(path[1..].split('.').next().unwrap_or_default().to_string());
        }
        rest = &after[end + 2..];
    }
    out
}

/// What `.A.B` names in `value`.
fn lookup<'a>(path: &str, value: &'a Value) -> Result<&'a Value, String> {
    if path == "." {
        return Ok(value);
    }
    let Some(path) = path.strip_prefix('.') else {
        return Err(format!("{path:?} is not a field (write .{path})"));
    };
    let mut current = value;
    for part in path.split('.') {
        current = match current {
            Value::Object(map) => map.get(part).unwrap_or(&Value::Null),
            _ => return Err(format!("can't evaluate field {part} in {}", go(current))),
        };
    }
    Ok(current)
}

fn action_value(action: &str, value: &Value) -> Result<String, String> {
    let words = split_words(action);
    let arg = |i: usize| -> Result<&Value, String> {
        lookup(words.get(i).map(String::as_str).unwrap_or("."), value)
    };
    match words.first().map(String::as_str) {
        Some("json") => serde_json::to_string(arg(1)?).map_err(|e| e.to_string()),
        Some("upper") => Ok(go(arg(1)?).to_uppercase()),
        Some("lower") => Ok(go(arg(1)?).to_lowercase()),
        Some("index") => {
            let list = arg(1)?;
            let key = words.get(2).ok_or("index needs an index")?;
            let found = match list {
                Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
                Value::Object(map) => map.get(key.trim_matches('"')),
                _ => None,
            };
            found
                .map(go)
                .ok_or_else(|| format!("index {key} of {}: out of range", go(list)))
        }
        Some("join") => {
            let sep = words.get(2).map(|s| s.trim_matches('"')).unwrap_or("");
            match arg(1)? {
                Value::Array(items) => Ok(items.iter().map(go).collect::<Vec<_>>().join(sep)),
                other => Ok(go(other)),
            }
        }
        Some(path) if path.starts_with('.') => Ok(go(lookup(path, value)?)),
        Some(other) => Err(format!("function {other:?} not defined")),
        None => Err("empty action {{}}".into()),
    }
}

/// Words of an action, a quoted string being one word.
fn split_words(action: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in action.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// A value as Go's `fmt` prints it in a template.
fn go(value: &Value) -> String {
    match value {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(go).collect::<Vec<_>>().join(" ")),
        Value::Object(map) => {
            let pairs: Vec<String> = map.iter().map(|(k, v)| format!("{k}:{}", go(v))).collect();
            format!("map[{}]", pairs.join(" "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_the_templates_scripts_use() {
        let v = json!({
            "Repository": "app", "Tag": "1.0", "Id": "sha256:ab",
            "Config": {"Cmd": ["sh", "-c", "run"], "Env": ["A=1"], "User": ""},
            "RepoTags": ["app:1.0", "app:latest"],
        });
        let r = |t: &str| render(t, &v).unwrap();
        assert_eq!(r("{{.Repository}}:{{.Tag}}"), "app:1.0");
        assert_eq!(r("{{.Repository}}\\t{{.Tag}}"), "app\t1.0");
        assert_eq!(r("{{.Config.Cmd}}"), "[sh -c run]");
        assert_eq!(r("{{json .Config.Env}}"), "[\"A=1\"]");
        assert_eq!(r("{{index .RepoTags 1}}"), "app:latest");
        assert_eq!(r("{{join .RepoTags \", \"}}"), "app:1.0, app:latest");
        assert_eq!(r("{{ .Id }}"), "sha256:ab");
        assert_eq!(r("{{.Missing}}"), "<no value>");
        assert!(render("{{nope .Id}}", &v).is_err() && render("{{.Id", &v).is_err());
        assert_eq!(
            fields("table {{.Repository}}\\t{{json .Tag}}"),
            ["Repository", "Tag"]
        );
    }
}
