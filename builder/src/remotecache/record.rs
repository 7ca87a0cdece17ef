//! The cache record: what `--cache-to` writes and `--cache-from` reads.
//!
//! A cache is an ordinary OCI image manifest (BuildKit's `image-manifest=true` layout, which
//! every registry accepts): its layers are the layer blobs of every exported step, each
//! annotated with its diff id (`containerd.io/uncompressed`, as BuildKit does), and its config
//! blob, of media type [`CONFIG_MEDIA_TYPE`], is a [`CacheConfig`]: one [`Record`] per cache
//! key, naming the layers of that step's result by their index in the manifest, bottom first,
//! with each layer's creation time (so a cached rebuild elsewhere dates its history as the
//! original build did, and gives the same image).
//!
//! ```json
//! {"version": 1,
//!  "records": [{"key": "sha256:…", "name": "[build 2/4] RUN make",
//!               "layers": [{"blob": 0}, {"blob": 3, "created": "2026-11-30T10:00:00Z"}]}]}
//! ```
//!
//! Keys are the solver's (`rbuild_solver::cachekey`), which depend on no path, time, owner or
//! host of the machine that built the step, so a record made on one machine is found by
//! another building the same inputs.

use crate::store::layout::{Descriptor, Manifest, OCI_MANIFEST};
use rbuild_solver::{Digest, Output, OutputLayer};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The media type of the config blob of a cache manifest.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";

/// The key of an image config that holds an inline cache (`--cache-to type=inline`): a
/// [`CacheConfig`] whose records name the image's own layers by index.
pub const INLINE_KEY: &str = "rbuild.cache.v1";

/// The annotation of a layer descriptor that holds its diff id.
pub const UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// The config blob of a cache manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// The format's version (1).
    pub version: u32,
    /// A record per cache key, sorted by key.
    pub records: Vec<Record>,
    /// The contents of `RUN --mount=type=cache` directories (`cache-mounts=true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountRecord>,
    /// What went into the records' keys, and into their local sources' (for explaining
    /// misses on another machine, see `rbuild_solver::summary`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub summaries: BTreeMap<Digest, rbuild_solver::summary::Summary>,
}

/// A cache mount's directory, as a layer of the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// The cache's storage key (`worker::mounts::cache_key` of its id).
    pub id: String,
    /// Its index in the manifest's layers.
    pub blob: usize,
}

/// One step's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The step's cache key.
    pub key: Digest,
    /// What the step was (for people reading the cache; not used to find it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The layers of its result, bottom first.
    pub layers: Vec<RecordLayer>,
}

/// A layer of a record's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordLayer {
    /// Its index in the manifest's layers.
    pub blob: usize,
    /// When the step that made it ran (RFC 3339), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

/// A step's result to export: its key, a name for people, its output.
pub struct Exported<'a> {
    /// The cache key.
    pub key: &'a Digest,
    /// The step's name.
    pub name: Option<&'a str>,
    /// Its result.
    pub output: &'a Output,
}

/// The manifest layers and the config for `steps`, whose layers are exported as the blobs
/// `blobs` gives (by diff id: the compressed blob of each layer, see
/// `crate::export::compress::layer_blob`). Each blob is listed once, in first-use order.
pub fn encode(
    steps: &[Exported],
    blobs: &HashMap<Digest, Descriptor>,
) -> Result<(Vec<Descriptor>, CacheConfig), String> {
    let mut layers: Vec<Descriptor> = Vec::new();
    let mut index: HashMap<Digest, usize> = HashMap::new();
    let mut records = BTreeMap::new();
    for step in steps {
        let mut refs = Vec::with_capacity(step.output.layers.len());
        for layer in &step.output.layers {
            let blob = match index.get(&layer.diff_id) {
                Some(i) => *i,
                None => {
                    let mut d = blobs
                        .get(&layer.diff_id)
                        .ok_or_else(|| format!("no blob for layer {}", layer.diff_id))?
                        .clone();
                    d.annotations
                        .insert(UNCOMPRESSED.into(), layer.diff_id.to_string());
                    d.platform = None;
                    layers.push(d);
                    index.insert(layer.diff_id.clone(), layers.len() - 1);
                    layers.len() - 1
                }
            };
            refs.push(RecordLayer {
                blob,
                created: layer.created.clone(),
            });
        }
        records.insert(
            step.key.clone(),
            Record {
                key: step.key.clone(),
                name: step.name.map(str::to_string),
                layers: refs,
            },
        );
    }
    Ok((
        layers,
        CacheConfig {
            version: 1,
            records: records.into_values().collect(),
            mounts: vec![],
            summaries: BTreeMap::new(),
        },
    ))
}

/// The config of an inline cache for an image whose layers have the diff ids `diff_ids`:
/// records of `steps` whose layers are all the image's (a prefix of them), by index.
pub fn encode_inline(steps: &[Exported], diff_ids: &[Digest]) -> CacheConfig {
    let records = steps
        .iter()
        .filter(|step| {
            step.output.layers.len() <= diff_ids.len()
                && step
                    .output
                    .layers
                    .iter()
                    .zip(diff_ids)
                    .all(|(l, d)| l.diff_id == *d)
        })
        .map(|step| {
            let record = Record {
                key: step.key.clone(),
                name: step.name.map(str::to_string),
                layers: step
                    .output
                    .layers
                    .iter()
                    .enumerate()
                    .map(|(blob, l)| RecordLayer {
                        blob,
                        created: l.created.clone(),
                    })
                    .collect(),
            };
            (step.key.clone(), record)
        })
        .collect::<BTreeMap<_, _>>();
    CacheConfig {
        version: 1,
        records: records.into_values().collect(),
        mounts: vec![],
        summaries: BTreeMap::new(),
    }
}

/// The cache mount directories of a cache, by storage key, as layers (blob and diff id).
pub fn decode_mounts(manifest: &Manifest, config: &CacheConfig) -> HashMap<String, OutputLayer> {
    config
        .mounts
        .iter()
        .filter_map(|m| {
            let blob = manifest.layers.get(m.blob)?;
            let diff_id = Digest::parse(blob.annotations.get(UNCOMPRESSED)?)?;
            let layer = OutputLayer {
                diff_id,
                digest: blob.digest.clone(),
                size: blob.size,
                media_type: blob.media_type.clone(),
                created: None,
            };
            Some((m.id.clone(), layer))
        })
        .collect()
}

/// The manifest of a cache whose config blob is `config` and whose layers are `layers`.
pub fn manifest(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
    Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config,
        layers,
        annotations: Default::default(),
    }
}

/// The records of a cache, as outputs by key, read from its manifest and config. A record
/// that names a layer the manifest does not have, or a layer without a valid diff id, is
/// left out and reported in the second list (never used).
pub fn decode(manifest: &Manifest, config: &CacheConfig) -> (HashMap<Digest, Output>, Vec<String>) {
    let mut problems = Vec::new();
    if config.version != 1 {
        problems.push(format!(
            "cache format version {} (this rbuild reads version 1)",
            config.version
        ));
        return (HashMap::new(), problems);
    }
    let diff_ids: Vec<Option<Digest>> = manifest
        .layers
        .iter()
        .map(|l| {
            l.annotations
                .get(UNCOMPRESSED)
                .and_then(|d| Digest::parse(d))
        })
        .collect();
    let mut out = HashMap::new();
    'records: for record in &config.records {
        let mut layers = Vec::with_capacity(record.layers.len());
        for l in &record.layers {
            let (Some(blob), Some(Some(diff_id))) =
                (manifest.layers.get(l.blob), diff_ids.get(l.blob))
            else {
                problems.push(format!(
                    "record {} names layer {}, which the cache does not describe",
                    record.key, l.blob
                ));
                continue 'records;
            };
            layers.push(OutputLayer {
                diff_id: diff_id.clone(),
                digest: blob.digest.clone(),
                size: blob.size,
                media_type: blob.media_type.clone(),
                created: l.created.clone(),
            });
        }
        out.insert(
            record.key.clone(),
            Output {
                layers,
                local: None,
            },
        );
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layout::OCI_LAYER_GZIP;

    fn layer(name: &str, created: Option<&str>) -> OutputLayer {
        OutputLayer {
            diff_id: Digest::of(name.as_bytes()),
            digest: Digest::of(name.as_bytes()),
            size: 10,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            created: created.map(str::to_string),
        }
    }

    fn gzip_of(l: &OutputLayer) -> Descriptor {
        Descriptor {
            media_type: OCI_LAYER_GZIP.into(),
            digest: Digest::of(format!("gz {}", l.diff_id).as_bytes()),
            size: 5,
            platform: None,
            annotations: Default::default(),
        }
    }

    #[test]
    fn records_round_trip_with_shared_layers_listed_once() {
        let base = layer("base", None);
        let a = Output {
            layers: vec![base.clone(), layer("a", Some("2026-01-01T00:00:00Z"))],
            local: None,
        };
        let b = Output {
            layers: vec![base.clone(), layer("b", Some("2026-01-02T00:00:00Z"))],
            local: None,
        };
        let blobs: HashMap<Digest, Descriptor> = a
            .layers
            .iter()
            .chain(&b.layers)
            .map(|l| (l.diff_id.clone(), gzip_of(l)))
            .collect();
        let (ka, kb) = (Digest::of(b"key a"), Digest::of(b"key b"));
        let steps = [
            Exported {
                key: &ka,
                name: Some("RUN a"),
                output: &a,
            },
            Exported {
                key: &kb,
                name: None,
                output: &b,
            },
        ];
        let (layers, config) = encode(&steps, &blobs).unwrap();
        assert_eq!(layers.len(), 3, "the base layer once");
        let json = serde_json::to_string(&config).unwrap();
        let config: CacheConfig = serde_json::from_str(&json).unwrap();
        let m = manifest(
            Descriptor {
                media_type: CONFIG_MEDIA_TYPE.into(),
                digest: Digest::of(json.as_bytes()),
                size: json.len() as u64,
                platform: None,
                annotations: Default::default(),
            },
            layers,
        );
        let (records, problems) = decode(&m, &config);
        assert!(problems.is_empty(), "{problems:?}");
        let got = &records[&ka];
        assert_eq!(got.layers.len(), 2);
        assert_eq!(got.layers[1].diff_id, a.layers[1].diff_id);
        assert_eq!(got.layers[1].digest, gzip_of(&a.layers[1]).digest);
        assert_eq!(got.layers[1].media_type, OCI_LAYER_GZIP);
        assert_eq!(got.layers[1].created, a.layers[1].created);
        assert_eq!(records[&kb].layers[0].digest, records[&ka].layers[0].digest);
    }

    #[test]
    fn records_naming_what_is_not_there_are_left_out() {
        let config = CacheConfig {
            version: 1,
            mounts: vec![],
            summaries: BTreeMap::new(),
            records: vec![Record {
                key: Digest::of(b"k"),
                name: None,
                layers: vec![RecordLayer {
                    blob: 7,
                    created: None,
                }],
            }],
        };
        let m = manifest(gzip_of(&layer("c", None)), vec![]);
        let (records, problems) = decode(&m, &config);
        assert!(records.is_empty());
        assert!(problems[0].contains("names layer 7"), "{problems:?}");
        let (records, problems) = decode(
            &m,
            &CacheConfig {
                version: 9,
                ..config
            },
        );
        assert!(records.is_empty() && problems[0].contains("version 9"));
    }
}
