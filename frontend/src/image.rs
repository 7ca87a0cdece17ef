//! The image configuration a Dockerfile builds: the OCI image config with Docker's extensions
//! (Healthcheck, Shell, OnBuild), serialized with the field names both use.

use rbuild_solver::VertexId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An image config (`application/vnd.oci.image.config.v1+json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// When the image was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// `MAINTAINER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture (`amd64`).
    #[serde(default)]
    pub architecture: String,
    /// Operating system (`linux`).
    #[serde(default)]
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The runtime configuration.
    #[serde(default)]
    pub config: ImageConfig,
    /// The layers' diff ids.
    #[serde(default)]
    pub rootfs: RootFs,
    /// One entry per instruction (and per base image step).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

/// `rootfs` of an image config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Digests of the uncompressed layers, bottom first.
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: vec![],
        }
    }
}

/// The `config` section: how containers of the image run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    /// `USER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `EXPOSE`: `"80/tcp": {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// `ENV`, `KEY=value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME`: `"/data": {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// `WORKDIR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `LABEL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `STOPSIGNAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Deprecated in the OCI spec but still written by BuildKit whenever a Dockerfile sets CMD
    /// or ENTRYPOINT, for Docker's Windows images; kept for identical configs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    /// `HEALTHCHECK` (Docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// `ONBUILD` triggers (Docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// `SHELL` (Docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

/// Docker's health check config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", cmd]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    /// Nanoseconds between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// Nanoseconds before a check is considered hung.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Nanoseconds of start-up grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    /// Nanoseconds between checks during start-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    /// Failures before unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

/// One history entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// When the step ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// The author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// `buildkit.dockerfile.v0` for steps of a Dockerfile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<std::borrow::Cow<'static, str>>,
    /// Whether the step added no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
    /// For a step of this build that may add a layer: the vertex whose output tells. The entry
    /// has a layer iff that vertex's output has more layers than its first input's. Filled in by
    /// the builder after the solve; never serialized.
    #[serde(skip)]
    pub layer_of: Option<VertexId>,
}

impl ImageConfig {
    /// The value of an environment variable.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env.as_ref()?.iter().rev().find_map(|kv| {
            // `KEY=value`: the byte after the key must be `=` (or the end); checking it first
            // rules out most entries without comparing strings.
            match kv.as_bytes().get(key.len()) {
                Some(b'=') if kv.starts_with(key) => Some(&kv[key.len() + 1..]),
                None if kv == key => Some(""),
                _ => None,
            }
        })
    }

    /// Sets an environment variable, replacing it in place if it exists.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let env = self.env.get_or_insert_with(Vec::new);
        let mut entry = String::with_capacity(key.len() + 1 + value.len());
        entry.push_str(key);
        entry.push('=');
        entry.push_str(value);
        match env.iter_mut().find(|kv| {
            kv.strip_prefix(key)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
        }) {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_with_docker_field_names() {
        let json = r#"{"architecture":"amd64","os":"linux","config":{"ExposedPorts":{"80/tcp":{}},"Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/app"},"rootfs":{"type":"layers","diff_ids":["sha256:abc"]},"history":[{"created_by":"x","empty_layer":true}]}"#;
        let image: Image = serde_json::from_str(json).unwrap();
        assert_eq!(image.config.env_value("PATH"), Some("/bin"));
        assert!(image.history[0].empty_layer);
        assert_eq!(serde_json::to_string(&image).unwrap(), json);
    }

    #[test]
    fn set_env_replaces_in_place() {
        let mut c = ImageConfig::default();
        c.set_env("A", "1");
        c.set_env("B", "2");
        c.set_env("A", "3");
        assert_eq!(c.env.unwrap(), ["A=3", "B=2"]);
    }

    #[test]
    fn env_value_matches_whole_names() {
        let c = ImageConfig {
            env: Some(
                ["A=1", "AB=2", "B", "A=3=4", "ÄX=5"]
                    .map(String::from)
                    .to_vec(),
            ),
            ..ImageConfig::default()
        };
        assert_eq!(c.env_value("A"), Some("3=4"), "the last entry wins");
        assert_eq!(c.env_value("AB"), Some("2"));
        assert_eq!(
            c.env_value("B"),
            Some(""),
            "an entry without = has an empty value"
        );
        assert_eq!(c.env_value("ÄX"), Some("5"));
        assert_eq!(c.env_value("Ä"), None);
        assert_eq!(c.env_value("C"), None);
    }
}
