//! One image build: assemble the context, build with the classic builder, tag, push, record. The attempt
//! loop around it (attempt counting, timeout, retries, records) is `artifacts_runtime::attempt`.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::{BuildImageOptionsBuilder, BuilderVersion, PushImageOptionsBuilder};
use bollard::Docker;
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use artifacts_runtime::archive::{self, ArchiveError, Limits};
use artifacts_runtime::attempt::{Build, BuildFailure};
use artifacts_runtime::latest::{move_forward, Moved};
use artifacts_runtime::logs::BuildLog;
use artifacts_runtime::metrics::record_stage;
use artifacts_runtime::neutral_tag::{self, NEUTRAL_TAG};
use artifacts_runtime::{registry, registry_gate};
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::messages::image::pull_command;
use artifacts_schemas::{
    Architecture, BuildId, BuildKind, ImageBuildResult, ImageJob, ImageQuery, ImageRecord, ImageRepository, Timestamp,
};

/// Where the submitted Dockerfile sits in the assembled context (a name no user file is likely to have).
const DOCKERFILE_IN_CONTEXT: &str = ".artifacts.Dockerfile";

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
        match move_forward(&self.nats.stores.images, &query.record_key(), &image).await.map_err(|err| err.message)? {
            Moved::Forward { .. } => {
                let repository = ImageRepository::new(&job.component, &job.branch).to_string();
                registry::copy_tag(&self.settings, &repository, &immutable_tag(job), job.architecture.short()).await?;
                log.write(&format!("pushed {} ({})", built.image_name, built.digest)).await;
                // The image is stored either way: a list that could not be published is only reported.
                match neutral_tag::refresh(&self.nats, &self.settings, &job.component, &job.branch).await {
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
    let docker = artifacts_runtime::docker::connect(settings).await.map_err(BuildFailure::Passing)?;
    let context = assemble_context(nats, settings, job, work_dir.to_path_buf()).await?;

    let repository = format!("{}/{}", settings.registry.address, ImageRepository::new(&job.component, &job.branch));
    let immutable_tag = immutable_tag(job);
    let immutable_name = format!("{repository}:{immutable_tag}");
    let build_args: HashMap<String, String> = job.build_args.clone().into_iter().collect();
    let cpu_period = 100_000;
    let options = BuildImageOptionsBuilder::default()
        .dockerfile(DOCKERFILE_IN_CONTEXT)
        .t(&immutable_name)
        .platform(job.architecture.platform())
        .networkmode(&settings.build.network)
        .memory(settings.build.memory_bytes.min(i32::MAX as u64) as i32)
        .cpuperiod(cpu_period)
        .cpuquota((settings.build.cpus * f64::from(cpu_period)) as i32)
        .buildargs(&build_args)
        .rm(true)
        .forcerm(true)
        .version(BuilderVersion::BuilderV1)
        .build();
    let file = tokio::fs::File::open(&context).await.map_err(|err| BuildFailure::Passing(err.to_string()))?;
    let body = bollard::body_try_stream(ReaderStream::with_capacity(file, 128 * 1024));
    // Base images from this service's registry are pulled as the workers (the submission checked that
    // the caller may read them).
    let credentials = registry::builder_credentials(settings)
        .map(|credentials| HashMap::from([(settings.registry.address.clone(), credentials)]));
    let building = Instant::now();
    let mut output = docker.build_image(options, credentials, Some(body));
    while let Some(item) = output.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    log.write(&text).await;
                }
                if let Some(error) = info.error_detail.and_then(|detail| detail.message) {
                    return Err(build_failed(&error, log));
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => return Err(build_failed(&error, log)),
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                return Err(build_failed(&message, log))
            }
            Err(other) => {
                return Err(BuildFailure::Passing(format!("lost the Docker engine during the build: {other}")))
            }
        }
    }
    drop(output);
    record_stage(BuildKind::Image, "build", building.elapsed());
    // Only the build's own tag is pushed; `store` points the architecture tag at it in the registry.
    let pushing = Instant::now();
    // Never while the collector sweeps the registry's blobs (see registry_gate).
    let gate_wait = registry_gate::SWEEP_LIMIT + Duration::from_secs(60);
    let pushed = registry_gate::push(&nats.stores.registry_gate, job.build_id.as_str(), gate_wait, async {
        push(&docker, &repository, &immutable_tag, settings, log).await
    });
    let digest = pushed.await.map_err(|err| BuildFailure::Passing(err.message))??;
    record_stage(BuildKind::Image, "push", pushing.elapsed());
    // The registry holds it now; the engine does not need to (nothing else ever collects it there).
    if let Err(err) =
        docker.remove_image(&immutable_name, None::<bollard::query_parameters::RemoveImageOptions>, None).await
    {
        tracing::warn!(%err, image = %immutable_name, "could not remove a pushed image from the engine");
    }
    let image_name = format!("{repository}:{}", job.architecture.short());
    Ok(ImageBuildResult { pull_command: pull_command(&image_name, &digest), image_name, immutable_name, digest })
}

/// The tag only this build pushes: `<arch>-<build id>`.
fn immutable_tag(job: &ImageJob) -> String {
    format!("{}-{}", job.architecture.short(), job.build_id)
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
    // The classic builder logs `Step 1/4 : FROM <image> [AS <name>]` before it pulls.
    let image = tail.lines().rev().find_map(|line| line.split_once(" : FROM ")).map(|(_, rest)| rest)?;
    let image = image.split_whitespace().next().unwrap_or(image);
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
        let info = item.map_err(|err| unreachable(err.to_string()))?;
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

/// Writes the build context into `dir`: the uploaded context's entries (checked), plus the Dockerfile.
async fn assemble_context(
    nats: &Nats,
    settings: &Settings,
    job: &ImageJob,
    dir: PathBuf,
) -> Result<PathBuf, BuildFailure> {
    let unavailable =
        |what: &str, err: &dyn std::fmt::Display| BuildFailure::Unavailable(format!("cannot read {what}: {err}"));
    let passing =
        |what: &str, err: &dyn std::fmt::Display| BuildFailure::Passing(format!("cannot write {what}: {err}"));
    let mut dockerfile = Vec::new();
    let mut object =
        nats.stores.uploads.get(&job.dockerfile).await.map_err(|err| unavailable("the Dockerfile", &err))?;
    object.read_to_end(&mut dockerfile).await.map_err(|err| unavailable("the Dockerfile", &err))?;

    let uploaded = match &job.context {
        Some(name) => {
            let path = dir.join("upload");
            let mut object = nats.stores.uploads.get(name).await.map_err(|err| unavailable("the context", &err))?;
            let mut file = tokio::fs::File::create(&path).await.map_err(|err| passing("the context", &err))?;
            artifacts_runtime::attempt::copy_object("the context", &mut object, &mut file).await?;
            Some(path)
        }
        None => None,
    };
    let limits = Limits::for_contexts(&settings.build);
    let context = dir.join("context.tar");
    let output = context.clone();
    tokio::task::spawn_blocking(move || -> Result<(), ArchiveError> {
        let mut builder = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(&output)?));
        builder.follow_symlinks(false);
        if let Some(uploaded) = uploaded {
            archive::for_each_entry(std::fs::File::open(uploaded)?, limits, 0, |path, entry| {
                let mut header = entry.header().clone();
                builder.append_data(&mut header, path, entry.by_ref().take(u64::MAX))
            })?;
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(dockerfile.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, DOCKERFILE_IN_CONTEXT, dockerfile.as_slice())?;
        builder.into_inner()?.into_inner().map_err(|err| err.into_error())?;
        Ok(())
    })
    .await
    .map_err(|err| BuildFailure::Passing(format!("context assembly stopped: {err}")))?
    .map_err(|err| BuildFailure::Permanent(format!("build context: {err}")))?;
    Ok(context)
}
