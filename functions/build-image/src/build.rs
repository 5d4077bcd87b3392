//! One image build: unpack the context, build with the engine's BuildKit ([`crate::buildkit`]), push,
//! record. The attempt
//! loop around it (attempt counting, timeout, retries, records) is `artifacts_engine::attempt`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::PushImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use tokio::io::AsyncReadExt;

use artifacts_engine::attempt::{Build, BuildFailure};
use artifacts_engine::docker::{engine_answered, engine_away, engine_unanswered};
use artifacts_engine::neutral_tag::{self, NEUTRAL_TAG};
use artifacts_engine::registry;
use artifacts_runtime::archive::{self, ArchiveError, Limits};
use artifacts_runtime::logs::BuildLog;
use artifacts_runtime::metrics::record_stage;
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::messages::image::pull_command;
use artifacts_schemas::{
    Architecture, BranchName, BuildId, BuildKind, ImageBuildResult, ImageJob, ImageQuery, ImageRecord, ImageRepository,
    Timestamp,
};

use artifacts_store::{Moved, Objects, StoreError, SWEEP_LIMIT};

use crate::buildkit;

/// An image job, with what building it needs.
pub struct ImageBuild {
    pub nats: Nats,
    pub settings: Arc<Settings>,
    pub job: ImageJob,
}

impl Build for ImageBuild {
    type Output = ImageBuildResult;

    fn build_id(&self) -> &BuildId {
        &self.job.build_id
    }

    fn describe(&self) -> String {
        format!("component {} branch {} for {}", self.job.component, self.job.branch, self.job.architecture)
    }

    fn architecture(&self) -> Architecture {
        self.job.architecture
    }

    async fn run(&self, work_dir: &Path, log: &mut BuildLog) -> Result<ImageBuildResult, BuildFailure> {
        build_and_push(&self.nats, &self.settings, &self.job, work_dir, log).await
    }

    async fn store(&self, built: &ImageBuildResult, log: &mut BuildLog) -> Result<(), String> {
        let job = &self.job;
        let phases = Phases::new(&job.build_id);
        let query =
            ImageQuery { component: job.component.clone(), branch: job.branch.clone(), architecture: job.architecture };
        let image = ImageRecord {
            component: job.component.clone(),
            branch: job.branch.clone(),
            architecture: job.architecture,
            image_name: built.image_name.clone(),
            digest: built.digest.clone(),
            build_id: job.build_id.clone(),
            built_at: Timestamp::now(),
        };
        match self.nats.store.store_image(&query, &image).await.map_err(|err| err.to_string())? {
            Moved::Forward { .. } => {
                let repository = ImageRepository::new(&job.component, &job.branch).to_string();
                phases.done("image record written");
                // The architecture tag and the list of every architecture's latest (which names images by
                // digest, not by tag) at once.
                let built_tag = immutable_tag(job);
                let (copied, refreshed) = tokio::join!(
                    registry::copy_tag(&self.settings, &repository, &built_tag, job.architecture.short()),
                    neutral_tag::refresh(&self.nats, &self.settings, &job.component, &job.branch)
                );
                phases.done("architecture tag copied, manifest list refreshed");
                copied?;
                log.write(&format!("pushed {} ({})", built.image_name, built.digest)).await;
                // The image is stored either way: a list that could not be published is only reported.
                match refreshed {
                    Ok(()) => {
                        log.write(&format!("{repository}:{NEUTRAL_TAG} lists every architecture's latest image")).await
                    }
                    Err(err) => log.write(&format!("warning: {repository}:{NEUTRAL_TAG} is not updated: {err}")).await,
                }
            }
            Moved::Behind { newer } => {
                log.write(&format!("pushed {}; build {newer} is newer and stays the latest", built.immutable_name))
                    .await
            }
        }
        Ok(())
    }
}

async fn build_and_push(
    nats: &Nats,
    settings: &Settings,
    job: &ImageJob,
    work_dir: &Path,
    log: &mut BuildLog,
) -> Result<ImageBuildResult, BuildFailure> {
    let started_on = time::OffsetDateTime::now_utc();
    let phases = Phases::new(&job.build_id);
    // What the build needs, fetched at once: the engine, the context and Dockerfile, the cache sources
    // and the secrets do not wait for one another.
    let (docker, assembled, cache_from, secrets) = tokio::join!(
        artifacts_engine::docker::connect(settings),
        assemble_context(nats, settings, job, work_dir.to_path_buf()),
        async {
            match settings.build.registry_cache {
                true => cache_sources(nats, settings, job).await,
                false => Vec::new(),
            }
        },
        build_secrets(nats, job),
    );
    let docker = docker.map_err(engine_away)?;
    engine_answered();
    let (context_dir, dockerfile_dir, dockerfile) = assembled?;
    let secrets = version_secret_mounts(nats, &dockerfile_dir, secrets?).await?;
    phases.done("engine, context, cache sources and secrets ready");

    let repository = format!("{}/{}", settings.registry.address, ImageRepository::new(&job.component, &job.branch));
    let immutable_tag = immutable_tag(job);
    let immutable_name = format!("{repository}:{immutable_tag}");
    let mut build_args = job.build_args.clone();
    if settings.build.registry_cache {
        // BuildKit's inline cache: the image's configuration says which step made which layer, so a
        // build on any engine can take the layers from the registry instead of running the steps.
        build_args.insert("BUILDKIT_INLINE_CACHE".into(), "1".into());
    }
    // Base images and cache sources from this service's registry are pulled as the workers (the
    // submission checked that the caller may read them).
    let credentials = match registry::builder_credentials(settings) {
        Some(c) => HashMap::from([(
            settings.registry.address.clone(),
            (c.username.unwrap_or_default(), c.password.unwrap_or_default()),
        )]),
        None => HashMap::new(),
    };
    // A step's output that shows a value shows `***` instead, in the log and the error message alike.
    log.mask(secrets.iter().map(|(_, value)| value.as_slice()));
    let version = docker.client_version();
    let request = buildkit::Request {
        tag: immutable_name.clone(),
        platform: job.architecture.platform().to_owned(),
        network: settings.build.network.clone(),
        target: job.target.clone(),
        build_args,
        cache_from,
        context_dir,
        dockerfile_dir,
        credentials,
        secrets,
        build_key: job.build_id.to_string(),
    };
    let building = Instant::now();
    let host = settings.docker_host();
    let api = format!("{}.{}", version.major_version, version.minor_version);
    match buildkit::build(&host, &api, request, log).await {
        Ok(()) => {}
        Err(buildkit::Failure::Build(error)) => return Err(build_failed(&error, log)),
        Err(buildkit::Failure::Engine(error)) => {
            let message = format!("lost the Docker engine during the build: {error}");
            // The engine went away (restarting, say), or it is there and failed this build.
            return Err(if answers(&docker).await { BuildFailure::Passing(message) } else { engine_away(message) });
        }
    }
    record_stage(BuildKind::Image, "build", building.elapsed());
    phases.done("built");
    // Only the build's own tag is pushed; `store` points the architecture tag at it in the registry.
    let pushing = Instant::now();
    // Never while the collector sweeps the registry's blobs (see `Store::registry_push`).
    let gate_wait = SWEEP_LIMIT + Duration::from_secs(60);
    let pushed = nats.store.registry_push(job.build_id.as_str(), gate_wait, async {
        push(&docker, &repository, &immutable_tag, settings, log).await
    });
    let digest = pushed.await.map_err(BuildFailure::from)??;
    record_stage(BuildKind::Image, "push", pushing.elapsed());
    phases.done("pushed");
    // Its signed provenance and SBOM, from the registry's copy; the engine's copy goes either way.
    let pushed =
        crate::attest::Pushed { dockerfile: &dockerfile, immutable_name: &immutable_name, digest: &digest, started_on };
    let attested = crate::attest::attest(nats, settings, &docker, job, pushed, log).await;
    phases.done("attested");
    // The registry holds it now; the engine does not need to (nothing else ever collects it there). Not
    // on the build's way: the records need not wait for it.
    let name = immutable_name.clone();
    tokio::spawn(async move {
        if let Err(err) = docker.remove_image(&name, None::<bollard::query_parameters::RemoveImageOptions>, None).await
        {
            tracing::warn!(%err, image = %name, "could not remove a pushed image from the engine");
        }
    });
    attested?;
    let image_name = format!("{repository}:{}", job.architecture.short());
    Ok(ImageBuildResult { pull_command: pull_command(&image_name, &digest), image_name, immutable_name, digest })
}

/// Debug lines saying how long each phase of a build took (`RUST_LOG=artifacts_build_image=debug`).
pub(crate) struct Phases<'a> {
    build_id: &'a BuildId,
    started: Instant,
    last: std::cell::Cell<Instant>,
}

impl<'a> Phases<'a> {
    pub(crate) fn new(build_id: &'a BuildId) -> Self {
        let now = Instant::now();
        Self { build_id, started: now, last: std::cell::Cell::new(now) }
    }

    pub(crate) fn done(&self, phase: &str) {
        let now = Instant::now();
        let took = now - self.last.replace(now);
        let (took_ms, at_ms) = (took.as_secs_f64() * 1e3, (now - self.started).as_secs_f64() * 1e3);
        tracing::debug!(build_id = %self.build_id, phase, took_ms, at_ms, "image build phase");
    }
}

/// The build secrets a build of this component may mount (`RUN --mount=type=secret,id=<name>`), handed
/// to BuildKit through the session, never written anywhere.
async fn build_secrets(nats: &Nats, job: &ImageJob) -> Result<Vec<(String, Vec<u8>)>, BuildFailure> {
    artifacts_runtime::secrets::for_component(nats, &job.component)
        .await
        .map_err(|err| BuildFailure::Unavailable(format!("cannot read the build secrets: {}", err.message)))
}

/// Has the Dockerfile read each secret it mounts under an id naming a version of the value (the first
/// 16 hex digits of its keyed fingerprint), and offers the secrets under those ids too. BuildKit's cache
/// knows a secret mount by its id alone: otherwise a build submitted because a value changed (which the
/// identical-work key tells apart) would take the steps that read the secret from the cache, made with
/// the old value.
async fn version_secret_mounts(
    nats: &Nats,
    dockerfile_dir: &Path,
    secrets: Vec<(String, Vec<u8>)>,
) -> Result<Vec<(String, Vec<u8>)>, BuildFailure> {
    if secrets.is_empty() {
        return Ok(secrets);
    }
    let inputs = artifacts_runtime::secrets::fingerprints_of(nats, &secrets)
        .map_err(|err| BuildFailure::Unavailable(format!("cannot read the build secrets: {}", err.message)))?;
    let versions: std::collections::BTreeMap<String, String> = inputs
        .into_iter()
        .map(|input| {
            let hex = input.fingerprint.trim_start_matches("hmac-sha256:");
            let version = hex.get(..16).unwrap_or(hex).to_owned();
            (input.name, version)
        })
        .collect();
    let path = dockerfile_dir.join("Dockerfile");
    let failed = |err: std::io::Error| BuildFailure::Passing(format!("cannot rewrite the Dockerfile: {err}"));
    let text = tokio::fs::read_to_string(&path).await.map_err(failed)?;
    let versioned = crate::dockerfile::version_secret_mounts(&text, &versions).map_err(BuildFailure::Permanent)?;
    if versioned != text {
        tokio::fs::write(&path, versioned).await.map_err(failed)?;
    }
    let mut offered = Vec::with_capacity(secrets.len() * 2);
    for (name, value) in secrets {
        if let Some(version) = versions.get(&name) {
            offered.push((format!("{name}@{version}"), value.clone()));
        }
        offered.push((name, value));
    }
    Ok(offered)
}

/// The registry images whose inline cache this build may reuse: the latest image of its own
/// (component, branch) for its architecture, and that of the component's `main` branch, when the
/// `main` repository is the component's own (its owner record says so).
async fn cache_sources(nats: &Nats, settings: &Settings, job: &ImageJob) -> Vec<String> {
    let tag = job.architecture.short();
    let own = ImageRepository::new(&job.component, &job.branch);
    let mut sources = vec![format!("{}/{own}:{tag}", settings.registry.address)];
    if let Ok(main) = BranchName::parse("main") {
        let repository = ImageRepository::new(&job.component, &main);
        let owned = match nats.store.repository_owner(repository.as_str()).await {
            Ok(Some(owner)) => owner.component == job.component && owner.branch.as_ref() == Some(&main),
            _ => false,
        };
        if job.branch != main && owned {
            sources.push(format!("{}/{repository}:{tag}", settings.registry.address));
        }
    }
    sources
}

/// The tag only this build pushes: `<arch>-<build id>`.
fn immutable_tag(job: &ImageJob) -> String {
    format!("{}-{}", job.architecture.short(), job.build_id)
}

/// Whether the engine answers a ping within 5 s.
async fn answers(docker: &Docker) -> bool {
    let answered = tokio::time::timeout(Duration::from_secs(5), docker.ping()).await.is_ok_and(|ping| ping.is_ok());
    if answered {
        engine_answered();
    }
    answered
}

fn build_failed(error: &str, log: &BuildLog) -> BuildFailure {
    let tail = log.tail();
    if let Some(message) = missing_base_image(error, &tail) {
        return BuildFailure::Permanent(message);
    }
    BuildFailure::Permanent(format!("docker build failed: {}\nlast log lines:\n{tail}", error.trim()))
}

/// A plain message for a `FROM` image that the engine lacks and cannot pull, instead of the engine's
/// registry error (`Get "https://registry-1.docker.io/v2/": dial tcp: lookup …: no such host`).
fn missing_base_image(error: &str, tail: &str) -> Option<String> {
    let unreachable = ["no such host", "dial tcp", "connection refused", "i/o timeout"];
    let absent = ["pull access denied", "manifest unknown", "repository does not exist", "not found"];
    let offline = unreachable.iter().any(|m| error.contains(m));
    if !offline && !absent.iter().any(|m| error.contains(m)) {
        return None;
    }
    // BuildKit's step `#2 [internal] load metadata for docker.io/library/<image>` comes before it pulls.
    let image = tail.lines().rev().find_map(|line| line.split_once("] load metadata for ")).map(|(_, rest)| rest)?;
    let image = image.split_whitespace().next().unwrap_or(image);
    let image = image.strip_prefix("docker.io/library/").or_else(|| image.strip_prefix("docker.io/")).unwrap_or(image);
    let why = if offline { "its registry cannot be reached from the worker" } else { "its registry has no such image" };
    Some(format!(
        "base image {image} is not in the worker's Docker engine, and it cannot be pulled: {why}. Load it into \
         the engine (docker load or docker import), or build it here and name it by its registry address"
    ))
}

/// Pushes one tag (always one: without a tag Docker pushes every tag of the repository) and returns the
/// manifest digest from the final status line.
async fn push(
    docker: &Docker,
    repository: &str,
    tag: &str,
    settings: &Settings,
    log: &mut BuildLog,
) -> Result<String, BuildFailure> {
    let unreachable = |why: String| {
        BuildFailure::Passing(format!("cannot push to the registry at {}: {why}", settings.registry.address))
    };
    let options = PushImageOptionsBuilder::default().tag(tag).build();
    let mut progress = docker.push_image(repository, Some(options), registry::builder_credentials(settings));
    let mut digest = None;
    while let Some(item) = progress.next().await {
        let info = item.map_err(|err| match engine_unanswered(&err) {
            true => engine_away(format!("lost the Docker engine while pushing: {err}")),
            false => unreachable(err.to_string()),
        })?;
        if let Some(error) = info.error_detail.and_then(|detail| detail.message) {
            return Err(unreachable(error));
        }
        if let Some(status) = info.status {
            if let Some(found) = status.split("digest: ").nth(1).and_then(|rest| rest.split_whitespace().next()) {
                digest = Some(found.to_owned());
                log.write(&format!("pushed {repository}:{tag}: {status}")).await;
            }
        }
    }
    digest.ok_or_else(|| unreachable("the registry reported no digest".into()))
}

/// Writes the build's two local sources into `dir`: `context/` (the uploaded context's checked entries)
/// and `dockerfile/Dockerfile`, and returns them with the Dockerfile as submitted. Nothing of the
/// service's goes into the context.
async fn assemble_context(
    nats: &Nats,
    settings: &Settings,
    job: &ImageJob,
    dir: PathBuf,
) -> Result<(PathBuf, PathBuf, String), BuildFailure> {
    let unavailable =
        |what: &str, err: &dyn std::fmt::Display| BuildFailure::Unavailable(format!("cannot read {what}: {err}"));
    // An upload the collector removed is gone for good; JetStream being away is for later.
    let fetch_failed = |what: &str, err: StoreError| match err {
        StoreError::NotFound(_) => {
            BuildFailure::Permanent(format!("{what} is no longer stored: submit the build again"))
        }
        err => unavailable(what, &err),
    };
    let passing =
        |what: &str, err: &dyn std::fmt::Display| BuildFailure::Passing(format!("cannot write {what}: {err}"));
    let mut dockerfile = Vec::new();
    let mut object = nats
        .store
        .object(Objects::Uploads, &job.dockerfile)
        .await
        .map_err(|err| fetch_failed("the Dockerfile", err))?;
    object.read_to_end(&mut dockerfile).await.map_err(|err| unavailable("the Dockerfile", &err))?;
    // Each component's cache mounts are its own (the Dockerfile was read at submission, so it parses).
    let text = String::from_utf8_lossy(&dockerfile).into_owned();
    let dockerfile = crate::dockerfile::scope_cache_mounts(&text, job.component.as_str())
        .map_err(|err| BuildFailure::Passing(format!("cannot read the Dockerfile: {err}")))?;
    let dockerfile_dir = dir.join("dockerfile");
    tokio::fs::create_dir_all(&dockerfile_dir).await.map_err(|err| passing("the Dockerfile", &err))?;
    tokio::fs::write(dockerfile_dir.join("Dockerfile"), &dockerfile)
        .await
        .map_err(|err| passing("the Dockerfile", &err))?;

    let context_dir = dir.join("context");
    tokio::fs::create_dir_all(&context_dir).await.map_err(|err| passing("the context", &err))?;
    let Some(name) = &job.context else { return Ok((context_dir, dockerfile_dir, text)) };
    let path = dir.join("upload");
    let mut object = nats.store.object(Objects::Uploads, name).await.map_err(|err| fetch_failed("the context", err))?;
    let mut file = tokio::fs::File::create(&path).await.map_err(|err| passing("the context", &err))?;
    artifacts_engine::attempt::copy_object("the context", &mut object, &mut file).await?;
    drop(file);
    let limits = Limits::for_contexts(&settings.build);
    let root = context_dir.clone();
    tokio::task::spawn_blocking(move || -> Result<(), ArchiveError> {
        archive::for_each_entry(std::fs::File::open(&path)?, limits, 0, |relative, entry| {
            unpack(&root, relative, entry)
        })?;
        std::fs::remove_file(&path)?;
        Ok(())
    })
    .await
    .map_err(|err| BuildFailure::Passing(format!("context assembly stopped: {err}")))?
    .map_err(|err| BuildFailure::Permanent(format!("build context: {err}")))?;
    Ok((context_dir, dockerfile_dir, text))
}

/// Writes one checked entry under `root`, never through a symlink an earlier entry made (a later entry
/// replaces an earlier one of the same path, as in Docker's own extraction).
fn unpack(
    root: &Path,
    relative: &Path,
    entry: &mut tar::Entry<'_, Box<dyn std::io::Read + '_>>,
) -> std::io::Result<()> {
    if relative.as_os_str().is_empty() {
        return Ok(());
    }
    let mut current = root.to_path_buf();
    let parts: Vec<_> = relative.components().collect();
    for part in &parts[..parts.len() - 1] {
        current.push(part);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(std::io::Error::other(format!("{} goes through a link or file", relative.display()))),
            Err(_) => std::fs::create_dir(&current)?,
        }
    }
    let target = root.join(relative);
    if let Ok(meta) = std::fs::symlink_metadata(&target) {
        if !(meta.is_dir() && entry.header().entry_type().is_dir()) {
            if meta.is_dir() {
                std::fs::remove_dir_all(&target)?;
            } else {
                std::fs::remove_file(&target)?;
            }
        }
    }
    entry.set_preserve_permissions(false);
    entry.set_preserve_mtime(true);
    entry.unpack(&target).map(|_| ())
}
