//! Writing the outputs of a finished build: the local store (tags), pushes, image archives,
//! root filesystems; then `--iidfile` and `--metadata-file`.

use super::*;

/// Everything the outputs of a finished build need.
pub(super) struct Export<'a> {
    pub(super) session: &'a Session,
    pub(super) args: &'a BuildArgs,
    pub(super) request: &'a BuildRequest,
    pub(super) state: &'a State,
    pub(super) registry: &'a Registry,
    pub(super) runtime: &'a tokio::runtime::Runtime,
    pub(super) worker: &'a BuildWorker,
    pub(super) builds: &'a [Build],
    pub(super) solved: &'a Solved,
    pub(super) caches: &'a cache::Caches,
    pub(super) keys: &'a cache::Keys,
    pub(super) summaries: &'a cache::Summaries,
    pub(super) loaded: &'a Loaded,
    pub(super) annotations: &'a super::annotations::Annotations,
    pub(super) attestations: &'a super::attest::Options,
    /// When the build started.
    pub(super) started: std::time::SystemTime,
    /// A remote context's URL and digest.
    pub(super) origin: Option<&'a (String, crate::provenance::DigestSet)>,
}

/// The image the outputs export: its manifest (or index), its config (one platform), and the
/// metadata `--metadata-file` writes.
struct Stored {
    manifest: crate::store::layout::Descriptor,
    config: Option<crate::store::layout::Descriptor>,
    /// The config of a one-platform image, index or not: the image id, as buildx's
    /// `--iidfile` takes `containerimage.config.digest` whenever there is one.
    id_config: Option<crate::store::layout::Descriptor>,
    metadata: serde_json::Value,
    /// Each platform's attestations, for exports that write them as files.
    statements: Vec<Vec<super::attest::Statement>>,
}

/// The image's `org.opencontainers.image.*` labels (`--label-annotations`).
fn oci_labels(image: &rbuild_frontend::image::Image) -> Vec<(String, String)> {
    let labels = image.config.labels.iter().flatten();
    labels
        .filter(|(k, _)| k.starts_with("org.opencontainers.image."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Export<'_> {
    fn multi(&self) -> bool {
        self.builds.len() > 1
    }

    /// Stores the image (one per platform; several make an index), writes the outputs, the
    /// id and the metadata.
    pub(super) fn run(&self, outputs: &[OutputSpec]) -> Result<i32> {
        let mut stored = self.store()?;
        let mut named = Vec::new();
        for output in outputs {
            self.output(output, &mut stored, &mut named)?;
        }
        if !named.is_empty() {
            stored.metadata["image.name"] = named.join(",").into();
        }
        self.caches.export(self, self.loaded, self.keys)?;
        // The image id: the config's digest, or for several platforms the index's as the
        // outputs last reported it (pushed with Docker media types, say), as buildx's
        // --iidfile.
        let image_id = match &stored.id_config {
            Some(config) => config.digest.to_string(),
            None => stored.metadata["containerimage.digest"]
                .as_str()
                .unwrap_or(stored.manifest.digest.as_str())
                .to_string(),
        };
        if let Some(path) = &self.args.iidfile {
            std::fs::write(path, image_id.as_str())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = &self.args.metadata_file {
            std::fs::write(path, serde_json::to_vec_pretty(&stored.metadata)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        self.session.printer.lock().expect("printer").summary(true);
        let to_stdout = outputs.iter().any(|o| {
            matches!(
                o,
                OutputSpec::Archive {
                    dest: Dest::Stdout,
                    ..
                } | OutputSpec::Tar { dest: Dest::Stdout }
            )
        });
        if self.session.mode == Mode::Quiet && !to_stdout {
            println!("{image_id}");
        }
        Ok(0)
    }

    /// One platform's image as the outputs take it: `--label`s, the inline cache, the manifest
    /// annotations (and with `--label-annotations` the OCI labels, which the index takes from
    /// the first platform).
    fn image_of(
        &self,
        build: &Build,
        index: &mut BTreeMap<String, String>,
    ) -> crate::export::FinalImage {
        let mut image = finalize(build, self.solved);
        if self.caches.inline() {
            image.inline_cache = Some(self.caches.inline_record(build, self.solved, self.keys));
        }
        // --label: set on the final config, with no history entry, as BuildKit does.
        for label in &self.args.labels {
            let (key, value) = label.split_once('=').unwrap_or((label.as_str(), ""));
            image
                .image
                .config
                .labels
                .get_or_insert_with(Default::default)
                .insert(key.to_string(), value.to_string());
        }
        image.annotations = self.annotations.manifest_for(&image.image);
        if self.args.label_annotations {
            for (key, value) in oci_labels(&image.image) {
                image
                    .annotations
                    .entry(key.clone())
                    .or_insert(value.clone());
                index.entry(key).or_insert(value);
            }
        }
        image
    }

    /// Stores each platform's image and, for several or with attestations, their index.
    fn store(&self) -> Result<Stored> {
        let mut manifests = Vec::with_capacity(self.builds.len());
        let mut attestations = Vec::new();
        let mut statements = Vec::new();
        let mut config = None;
        let options = self.attestations;
        if options.sbom {
            // The SBOM reads every layer.
            self.fetch_layers()?;
        }
        let provenance = options
            .provenance
            .as_ref()
            .map(|p| super::attest::Provenance::new(self, p));
        let indexed = self.multi() || options.any();
        let mut index_annotations = self.annotations.index.clone();
        for build in self.builds {
            let image = self.image_of(build, &mut index_annotations);
            let (mut manifest, _, image_config) = store_image(&self.state.store, &image)?;
            // Where each layer came from, for `rbuild sbom` and the like.
            let origins = super::attest::origins(build, &self.loaded.file, &image);
            crate::store::origins::save(self.state, &image_config.digest, &origins)
                .context("recording where the image's layers came from")?;
            if indexed {
                manifest.platform = Some(crate::store::layout::Platform {
                    os: image.image.os.clone(),
                    architecture: image.image.architecture.clone(),
                    variant: image.image.variant.clone(),
                });
            }
            let descriptor = self.annotations.manifest_descriptor_for(&image.image);
            manifest.annotations.extend(descriptor);
            // BuildKit's order: the SBOM, then provenance.
            let mut these = Vec::new();
            if options.sbom {
                let names = &self.args.tags;
                let made = (&image, origins.as_slice());
                these.push(super::attest::sbom(self.state, made, &manifest, names)?);
                let build_args = &self.request.build_args;
                for stage in super::attest::scanned_stages(options, build_args, build) {
                    let image = (&image, &manifest);
                    these.push(super::attest::stage_sbom(self, build, stage, image)?);
                }
                if options.scan_context || build.scan_context {
                    these.push(super::attest::context_sbom(self, &image, &manifest));
                }
            }
            if let Some(p) = &provenance {
                these.push(p.statement(self, build, &image, &manifest));
            }
            if !these.is_empty() {
                attestations.push(super::attest::attach(self.state, &manifest, &these)?);
            }
            statements.push(these);
            manifests.push(manifest);
            config = Some(image_config);
        }
        let id_config = config.clone().filter(|_| !self.multi());
        // Attestations follow the images in the index, as BuildKit orders them.
        manifests.extend(attestations);
        let (mut manifest, config) = match indexed {
            true => (
                store_index(&self.state.store, &manifests, false, &index_annotations)?,
                None,
            ),
            false => (manifests[0].clone(), config),
        };
        if indexed {
            let descriptor = self.annotations.index_descriptor.clone();
            manifest.annotations.extend(descriptor);
        }
        let mut metadata = serde_json::json!({
            "containerimage.digest": manifest.digest,
            "containerimage.descriptor": {
                "mediaType": manifest.media_type,
                "digest": manifest.digest,
                "size": manifest.size,
            },
        });
        if let Some(config) = &id_config {
            metadata["containerimage.config.digest"] = config.digest.to_string().into();
        }
        Ok(Stored {
            manifest,
            config,
            id_config,
            metadata,
            statements,
        })
    }

    /// Writes one output.
    fn output(
        &self,
        output: &OutputSpec,
        stored: &mut Stored,
        named: &mut Vec<String>,
    ) -> Result<()> {
        let started = Instant::now();
        match output {
            OutputSpec::Image {
                names,
                push,
                compression,
                oci_mediatypes,
            } => {
                let mut lines = match &stored.config {
                    Some(config) => vec![
                        format!("writing image {} done", config.digest),
                        format!("writing manifest {} done", stored.manifest.digest),
                    ],
                    None => vec![format!(
                        "writing manifest list {} done",
                        stored.manifest.digest
                    )],
                };
                // A multi-platform image is only pushed (refused otherwise). Layers of an
                // imported cache are fetched for a local name, unless the image is pushed:
                // then it is named here only if it is whole (the registry mounts the rest).
                // A multi-platform image is named as its index (each platform's manifest in
                // it), so `run --platform` and `save` find every platform.
                if !names.is_empty() {
                    if !*push {
                        self.fetch_layers()?;
                    }
                    if self.whole() {
                        for name in names {
                            self.state.store.tag(name, &stored.manifest)?;
                            lines.push(format!("naming to {name} done"));
                        }
                    } else {
                        lines.push(
                            "not naming the image here: some of its layers are only in the                              registry (rbuild pull gets them)"
                                .to_string(),
                        );
                    }
                }
                // Without a name, kept untagged (Docker's `<none>`), usable by its id.
                if names.is_empty() && !*push {
                    self.fetch_layers()?;
                    self.state.store.keep_untagged(&stored.manifest)?;
                }
                named.extend(names.iter().cloned());
                self.session.step("exporting to image", &lines, started);
                if *push {
                    self.push(names, (compression, *oci_mediatypes), stored)?;
                }
            }
            OutputSpec::Archive {
                format,
                docker_media_types,
                dest,
                names,
                compression,
            } => {
                self.fetch_layers()?;
                let counter = Arc::new(Counter::default());
                let live = self
                    .session
                    .printer
                    .lock()
                    .expect("printer")
                    .live("exporting layers", counter.clone());
                let exported = write_archive(
                    self.state,
                    &[ArchiveImage {
                        manifest: stored.manifest.clone(),
                        names: names.clone(),
                    }],
                    *format,
                    *docker_media_types,
                    dest,
                    compression,
                    &counter,
                )?;
                drop(live);
                let mut lines = vec![
                    format!(
                        "exporting layers {} {} done",
                        crate::units::human(counter.get()),
                        crate::units::rate(counter.get(), started.elapsed())
                    ),
                    format!("exporting manifest {} done", exported[0].digest),
                ];
                if let Some(config) = &stored.config {
                    lines.push(format!("exporting config {} done", config.digest));
                }
                lines.push(format!("sending tarball to {dest} done"));
                let what = match format {
                    ArchiveFormat::Oci => "exporting to oci image format",
                    ArchiveFormat::Docker => "exporting to docker image format",
                };
                self.session.step(what, &lines, started);
            }
            OutputSpec::Local { dest } => {
                let platforms = self.builds.iter().zip(&self.request.platforms);
                for ((build, platform), statements) in platforms.zip(&stored.statements) {
                    // Several platforms: a directory each, named as BuildKit names them.
                    let dest = match (self.multi(), platform) {
                        (true, Some(p)) => dest.join(p.to_string().replace('/', "_")),
                        _ => dest.clone(),
                    };
                    self.worker
                        .export_rootfs(&self.solved[&build.target], None, Some(&dest))?;
                    // Attestations as files next to the root filesystem, as BuildKit's local
                    // exporter writes them.
                    for s in statements {
                        let path = dest.join(&s.file);
                        std::fs::write(&path, serde_json::to_vec_pretty(&s.statement)?)
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                }
                self.session.step(
                    "exporting to client directory",
                    &[format!("copying files to {} done", dest.display())],
                    started,
                );
            }
            OutputSpec::Tar { dest } => {
                self.worker.export_rootfs(
                    &self.solved[&self.builds[0].target],
                    Some(dest),
                    None,
                )?;
                self.session.step(
                    "exporting to client tarball",
                    &[format!("sending tarball to {dest} done")],
                    started,
                );
            }
            OutputSpec::CacheOnly => {}
        }
        Ok(())
    }

    /// Downloads the layers of the images that are known only elsewhere (an imported cache).
    fn fetch_layers(&self) -> Result<()> {
        for build in self.builds {
            let layers = &self.solved[&build.target].layers;
            crate::remotecache::fetch_missing(
                self.state,
                self.registry,
                self.runtime.handle(),
                layers,
                &|_, _, _, _| {},
            )?;
        }
        Ok(())
    }

    /// Whether every layer of the images is here.
    fn whole(&self) -> bool {
        self.builds.iter().all(|b| {
            self.solved[&b.target]
                .layers
                .iter()
                .all(|l| crate::store::layer::has_layer(self.state, &l.digest, &l.media_type))
        })
    }

    /// Pushes the image under each of `names`.
    fn push(
        &self,
        names: &[String],
        format: (&Compression, bool),
        stored: &mut Stored,
    ) -> Result<()> {
        let started = Instant::now();
        let mut lines = Vec::new();
        for name in names {
            let report = |line: String| {
                if self.session.mode == Mode::Plain {
                    eprintln!("{line}");
                }
            };
            let pushed = crate::cli::commands::push::push_image(
                self.state,
                self.registry,
                self.runtime,
                &stored.manifest,
                name,
                format,
                &report,
            )?;
            lines.push(format!("pushing {name}@{} done", pushed.digest));
            // As buildx: the digest and descriptor of what was pushed (with Docker media
            // types, another manifest than the stored one).
            stored.metadata["containerimage.digest"] = pushed.digest.to_string().into();
            stored.metadata["containerimage.descriptor"] = serde_json::json!({
                "mediaType": pushed.media_type,
                "digest": pushed.digest,
                "size": pushed.size,
            });
        }
        self.session
            .step("pushing layers and manifest", &lines, started);
        Ok(())
    }
}
