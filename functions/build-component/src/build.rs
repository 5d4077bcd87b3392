//! One component build: clone, read the recipe, fetch the dependencies (building absent ones first),
//! run the command in a container, store the output. The attempt loop around it (attempt counting,
//! timeout, retries, records) is `artifacts_engine::attempt`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use artifacts_engine::attempt::{Build, BuildFailure};
use artifacts_engine::git::{self, checked_url};
use artifacts_runtime::archive::Limits;
use artifacts_runtime::configuration::redact_url;
use artifacts_runtime::logs::BuildLog;
use artifacts_runtime::metrics::{count_stored, timed};
use artifacts_runtime::{secrets, Nats, Settings};
use artifacts_schemas::messages::keys::glob_matches;
use artifacts_schemas::{
    Architecture, BuildId, BuildKind, BuildStatus, ComponentBuildRequest, ComponentJob, ComponentQuery,
    ComponentRecord, DependencyUsed, Failure, RebuiltForPush, Timestamp,
};
use artifacts_store::{Moved, Objects};

use crate::container::{pack_inputs, Container, ContainerSpec};
use crate::recipe::{self, Dependency};
use crate::submit::{self, Submitter};
use crate::{attest, builder_image, output};

/// Files in a component tarball or dependency.
const MAX_ARTIFACT_ENTRIES: u64 = 1_000_000;

pub struct ComponentBuild {
    pub nats: Nats,
    pub settings: Arc<Settings>,
    pub job: ComponentJob,
}

impl ComponentBuild {
    fn limits(&self) -> Limits {
        Limits { max_bytes: self.settings.build.max_artifact_bytes, max_entries: MAX_ARTIFACT_ENTRIES }
    }

    /// What the dependencies of one build may hold together, unpacked.
    fn dependency_limits(&self) -> Limits {
        Limits { max_bytes: self.settings.build.max_dependency_bytes, ..self.limits() }
    }

    /// `component@tag`, as the cycle check writes it.
    fn label(component: &str, tag: &str) -> String {
        format!("{component}@{tag}")
    }

    fn query(&self) -> ComponentQuery {
        ComponentQuery {
            component: self.job.component.clone(),
            tag: self.job.tag.clone(),
            architecture: self.job.architecture,
            url: None,
        }
    }
}

impl Build for ComponentBuild {
    type Output = ComponentRecord;

    fn build_id(&self) -> &BuildId {
        &self.job.build_id
    }

    fn describe(&self) -> String {
        format!("component {} tag {} for {}", self.job.component, self.job.tag, self.job.architecture)
    }

    fn architecture(&self) -> Architecture {
        self.job.architecture
    }

    async fn run(&self, work_dir: &Path, log: &mut BuildLog) -> Result<ComponentRecord, BuildFailure> {
        let job = &self.job;
        let settings = &self.settings;
        let started_on = time::OffsetDateTime::now_utc();
        // Checked again here: the roots or the file system may have changed since the submission.
        let url = checked_url(&job.url, &settings.git).map_err(|err| BuildFailure::Permanent(err.message))?;
        let shown_url = redact_url(url.as_str());
        log.write(&format!("cloning {shown_url} at {}", job.tag)).await;
        let checkout =
            timed(BuildKind::Component, "clone", git::clone(&url, &job.tag, &settings.git, work_dir)).await?;
        log.write(&format!("commit {}", checkout.commit)).await;
        if checkout.is_tag && !job.replaces_version {
            let first = self.nats.store.component(&self.query()).await?;
            if let Some(first) = first.filter(|r| !r.commit.is_empty() && r.commit != checkout.commit) {
                return Err(BuildFailure::Permanent(submit::moved_tag(
                    &job.component,
                    &job.tag,
                    &first.commit,
                    &checkout.commit,
                )));
            }
        }
        let recipe = recipe::read(&checkout.path).map_err(BuildFailure::Permanent)?;
        // Before anything else is fetched: a secret the component may not use fails the build at once.
        let secrets =
            secrets::for_build(&self.nats, &job.component, &recipe.secrets).await.map_err(|err| match err.failure {
                Failure::Unavailable => BuildFailure::Passing(err.message),
                _ => BuildFailure::Permanent(err.message),
            })?;
        log.mask(secrets.iter().map(|(_, value)| value));
        // What the record says the build read (keyed fingerprints): a later identical submission builds
        // anew when one of these values has changed.
        let secret_inputs =
            secrets::fingerprints_of(&self.nats, &secrets).map_err(|err| BuildFailure::Passing(err.message))?;
        if !secrets.is_empty() {
            log.write(&format!("secrets at {}/: {}", crate::container::SECRETS_DIR, recipe.secrets.join(", "))).await;
        }

        let dependencies = self.fetch_dependencies(&recipe.depends, work_dir, log).await?;

        let docker = crate::container::connect_engine(settings).await?;
        // An input like a Dockerfile's `FROM`: only an image the build's key could build `FROM`.
        let image = builder_image::choose(&self.nats, settings, &docker, job, recipe.image.as_deref(), log).await?;
        let builder = attest::builder_image(&docker, &image).await?;
        log.write(&format!("running {:?} in {image} ({})", recipe.command, builder.digest)).await;
        let user = settings.build_user();
        let platform = job.architecture.platform();
        let spec = ContainerSpec {
            image: &image,
            recipe: &recipe,
            platform,
            user,
            build_id: &job.build_id,
            secrets: &secrets,
        };
        let container = Container::create(&docker, &settings.build, spec).await?;
        let inputs = work_dir.join("inputs.tar");
        let unpacked: Vec<_> = dependencies.iter().map(|(used, path)| (used.component.clone(), path.clone())).collect();
        let (source, output_dir, limits, packed) =
            (checkout.path.clone(), recipe.output.clone(), self.dependency_limits(), inputs.clone());
        let owner = user.unwrap_or((0, 0));
        tokio::task::spawn_blocking(move || pack_inputs(&source, &unpacked, &output_dir, limits, owner, &packed))
            .await
            .map_err(|err| BuildFailure::Passing(format!("packing the inputs stopped: {err}")))?
            .map_err(|err| BuildFailure::Permanent(format!("a dependency or the source: {err}")))?;
        container.upload(&inputs).await?;
        timed(BuildKind::Component, "build", container.run(log, &secrets)).await?;
        drop(secrets);

        let query = self.query();
        let object = format!("{}/{}.tar.gz", query.record_key(), job.build_id);
        let download = container.download(&recipe.output);
        let storing = output::store(download, &self.nats.store, &object, self.limits(), checkout.commit_time);
        let stored = timed(BuildKind::Component, "store", storing).await?;
        count_stored(BuildKind::Component, stored.size);
        log.write(&format!("stored {} bytes as {object} ({})", stored.size, stored.digest)).await;
        let record = ComponentRecord {
            component: job.component.clone(),
            tag: job.tag.clone(),
            architecture: job.architecture,
            url: shown_url,
            commit: checkout.commit.clone(),
            builder_image: image,
            dependencies: dependencies.into_iter().map(|(used, _)| used).collect(),
            digest: stored.digest,
            size: stored.size,
            bucket: self.nats.store.archives_bucket(),
            object,
            build_id: job.build_id.clone(),
            built_at: Timestamp::now(),
            secrets: secret_inputs,
        };
        attest::attest(&self.nats, settings, job, &record, builder, &stored.files, started_on).await?;
        log.write(&format!("signed its provenance and SBOM ({} files)", stored.files.len())).await;
        Ok(record)
    }

    async fn store(&self, record: &ComponentRecord, log: &mut BuildLog) -> Result<(), String> {
        match self.nats.store.store_component(&self.query(), record).await.map_err(|err| err.to_string())? {
            Moved::Forward { .. } => {
                log.write(&format!("component {}@{} is {}", record.component, record.tag, record.digest)).await;
                self.rebuild_dependents(record).await?;
            }
            Moved::Behind { newer } => {
                log.write(&format!(
                    "build {newer} is newer and stays the latest of {}@{}",
                    record.component, record.tag
                ))
                .await;
            }
        }
        Ok(())
    }
}

impl ComponentBuild {
    /// A build for a push hands its dependents to the git trigger (durably: a lost message would leave
    /// them on the old version).
    async fn rebuild_dependents(&self, record: &ComponentRecord) -> Result<(), String> {
        let Some(trigger) = &self.job.trigger else { return Ok(()) };
        let mut rebuilt = self.job.rebuilt_for_push.clone();
        rebuilt.push(Self::label(record.component.as_str(), record.tag.as_str()));
        let built = RebuiltForPush {
            component: record.component.clone(),
            tag: record.tag.clone(),
            architecture: record.architecture,
            trigger: trigger.clone(),
            rebuilt,
        };
        let payload = serde_json::to_vec(&built).expect("messages serialise");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("dependents-{}", self.job.build_id).as_str());
        let subject = self.nats.subjects.git_push_dependents();
        async {
            self.nats.jetstream.publish_with_headers(subject, headers, payload.into()).await?.await?;
            Ok::<_, async_nats::Error>(())
        }
        .await
        .map_err(|err| format!("cannot hand the dependents to the git trigger: {err}"))
    }

    /// Downloads each dependency's tarball into `dir`. A dependency that is absent but whose source is
    /// known is submitted, and this build waits for it (without counting an attempt); a cycle, an unknown
    /// source or a failed dependency build fails this build.
    async fn fetch_dependencies(
        &self,
        depends: &[Dependency],
        dir: &Path,
        log: &mut BuildLog,
    ) -> Result<Vec<(DependencyUsed, PathBuf)>, BuildFailure> {
        let job = &self.job;
        let mut chain = job.dependents.clone();
        chain.push(Self::label(job.component.as_str(), job.tag.as_str()));
        let mut fetched = Vec::new();
        let mut waiting = Vec::new();
        for dependency in depends {
            let label = Self::label(dependency.component.as_str(), dependency.tag.as_str());
            if let Some(patterns) = &job.component_patterns {
                if !patterns.iter().any(|p| glob_matches(p, dependency.component.as_str())) {
                    return Err(BuildFailure::Permanent(format!(
                        "dependency {label} is outside the components this build's key may read ({})",
                        patterns.join(", ")
                    )));
                }
            }
            if let Some(start) = chain.iter().position(|c| c == &label) {
                let cycle: Vec<&str> = chain[start..].iter().map(String::as_str).chain([label.as_str()]).collect();
                return Err(BuildFailure::Permanent(format!("dependency cycle: {}", cycle.join(" -> "))));
            }
            let query = ComponentQuery {
                component: dependency.component.clone(),
                tag: dependency.tag.clone(),
                architecture: job.architecture,
                url: None,
            };
            match self.nats.store.component(&query).await? {
                Some(record) => {
                    let path = dir.join(format!("dependency-{}.tar.gz", fetched.len()));
                    self.download(&record.object, &path).await?;
                    log.write(&format!("dependency {label}: {}", record.digest)).await;
                    let used = DependencyUsed {
                        component: record.component,
                        tag: record.tag,
                        digest: record.digest,
                        build_id: record.build_id,
                    };
                    fetched.push((used, path));
                }
                None => waiting.push((label.clone(), self.build_dependency(dependency, &label, &chain).await?)),
            }
        }
        if waiting.is_empty() {
            Ok(fetched)
        } else {
            let named: Vec<String> = waiting.iter().map(|(label, id)| format!("{label} (build {id})")).collect();
            let message = format!("waiting for dependencies: {}", named.join(", "));
            Err(BuildFailure::Waiting { message, on: waiting.into_iter().map(|(_, id)| id).collect() })
        }
    }

    /// Submits an absent dependency's build; answers its id. Refuses when the build this one waited for
    /// last time failed.
    async fn build_dependency(
        &self,
        dependency: &Dependency,
        label: &str,
        chain: &[String],
    ) -> Result<BuildId, BuildFailure> {
        let Some(source) = self.nats.store.source(&dependency.component).await? else {
            return Err(BuildFailure::Permanent(format!(
                "dependency {label} is not built and its source is unknown: build it first (POST /api/v1/components)"
            )));
        };
        if let Some(failed) = self.dependency_failed_before(&dependency.component).await {
            return Err(BuildFailure::Permanent(format!("dependency {label} failed to build: {failed}")));
        }
        let request = ComponentBuildRequest {
            url: source.url,
            component: dependency.component.clone(),
            tag: dependency.tag.clone(),
            architecture: self.job.architecture,
            // It is absent from the store, so an identical build that succeeded is gone (deleted).
            force: true,
        };
        let record = self.nats.store.build(&self.job.build_id).await.ok().flatten();
        let submitter = Submitter {
            requested_by: record.map(|r| r.requested_by).unwrap_or_default(),
            component_patterns: self.job.component_patterns.clone(),
            trigger: None,
            rebuilt_for_push: Vec::new(),
            // Built again with this build's chain, so that a cycle is named; a dependency that fails
            // again fails this build (see `dependency_failed_before`).
            for_lookup: false,
            admin: false,
        };
        let accepted = submit::queue(&self.nats, &self.settings, &request, &submitter, chain.to_vec()).await?;
        Ok(accepted.build_id)
    }

    /// The error of `component`'s build this build waited for last time, if it failed.
    async fn dependency_failed_before(&self, component: &artifacts_schemas::ComponentName) -> Option<String> {
        let record = self.nats.store.build(&self.job.build_id).await.ok().flatten()?;
        for build_id in record.waiting_on {
            let dependency = self.nats.store.build(&build_id).await.ok().flatten()?;
            if dependency.work.component() == component && dependency.status == BuildStatus::Failed {
                return Some(dependency.error_message.unwrap_or_default());
            }
        }
        None
    }

    async fn download(&self, object: &str, path: &Path) -> Result<(), BuildFailure> {
        let mut reader = self.nats.store.object(Objects::Archives, object).await?;
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|err| BuildFailure::Passing(format!("cannot write a dependency: {err}")))?;
        artifacts_engine::attempt::copy_object("a dependency", &mut reader, &mut file).await?;
        Ok(())
    }
}
