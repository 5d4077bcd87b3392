//! One component build: clone, read the recipe, fetch the dependencies (building absent ones first),
//! run the command in a container, store the output. The attempt loop around it (attempt counting,
//! timeout, retries, records) is `artifacts_runtime::attempt`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use artifacts_runtime::archive::Limits;
use artifacts_runtime::attempt::{Build, BuildFailure};
use artifacts_runtime::builds;
use artifacts_runtime::configuration::redact_url;
use artifacts_runtime::latest::{move_forward, Moved};
use artifacts_runtime::logs::BuildLog;
use artifacts_runtime::metrics::{count_stored, timed};
use artifacts_runtime::nats::{read_json, ResourceNames};
use artifacts_runtime::{secrets, trigger_index, Nats, Settings};
use artifacts_schemas::messages::keys::glob_matches;
use artifacts_schemas::names::slug_with_hash;
use artifacts_schemas::{
    Architecture, BuildId, BuildKind, BuildStatus, ComponentBuildRequest, ComponentJob, ComponentQuery,
    ComponentRecord, ComponentSource, DependencyUsed, Failure, RebuiltForPush, Timestamp,
};

use crate::container::{pack_inputs, Container, ContainerSpec};
use crate::recipe::{self, Dependency};
use crate::submit::{self, Submitter};
use crate::{builder_image, git, output};

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
        // Checked again here: the roots or the file system may have changed since the submission.
        let url = submit::checked_url(&job.url, &settings.git).map_err(|err| BuildFailure::Permanent(err.message))?;
        let shown_url = redact_url(url.as_str());
        log.write(&format!("cloning {shown_url} at {}", job.tag)).await;
        let checkout =
            timed(BuildKind::Component, "clone", git::clone(&url, &job.tag, &settings.git, work_dir)).await?;
        log.write(&format!("commit {}", checkout.commit)).await;
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
        log.write(&format!("running {:?} in {image}", recipe.command)).await;
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
        let storing =
            output::store(container.download(&recipe.output), &self.nats.stores.archives, &object, self.limits());
        let stored = timed(BuildKind::Component, "store", storing).await?;
        count_stored(BuildKind::Component, stored.size);
        log.write(&format!("stored {} bytes as {object} ({})", stored.size, stored.digest)).await;
        Ok(ComponentRecord {
            component: job.component.clone(),
            tag: job.tag.clone(),
            architecture: job.architecture,
            url: shown_url,
            commit: checkout.commit.clone(),
            builder_image: image,
            dependencies: dependencies.into_iter().map(|(used, _)| used).collect(),
            digest: stored.digest,
            size: stored.size,
            bucket: ResourceNames::new(&self.nats.subjects).archives_bucket(),
            object,
            build_id: job.build_id.clone(),
            built_at: Timestamp::now(),
            secrets: secret_inputs,
        })
    }

    async fn store(&self, record: &ComponentRecord, log: &mut BuildLog) -> Result<(), String> {
        let key = self.query().record_key();
        match move_forward(&self.nats.stores.components, &key, record).await.map_err(|err| err.message)? {
            Moved::Forward { replaced } => {
                let index = &self.nats.stores.trigger_index;
                trigger_index::add_component(index, &record.url, &record.component, Some(record.architecture))
                    .await
                    .map_err(|err| err.message)?;
                trigger_index::record_dependencies(index, Some(record), replaced.as_ref())
                    .await
                    .map_err(|err| err.message)?;
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
            let stored: Option<ComponentRecord> = read_json(&self.nats.stores.components, &query.record_key())
                .await
                .map_err(|e| BuildFailure::Passing(e.message))?;
            match stored {
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
                None => waiting.push(self.build_dependency(dependency, &label, &chain).await?),
            }
        }
        if waiting.is_empty() {
            Ok(fetched)
        } else {
            Err(BuildFailure::Waiting(format!("waiting for dependencies: {}", waiting.join(", "))))
        }
    }

    /// Submits an absent dependency's build; answers `label (build <id>)`. Refuses when the build this
    /// one waited for last time failed.
    async fn build_dependency(
        &self,
        dependency: &Dependency,
        label: &str,
        chain: &[String],
    ) -> Result<String, BuildFailure> {
        let source: Option<ComponentSource> =
            read_json(&self.nats.stores.sources, &slug_with_hash(dependency.component.as_str()))
                .await
                .map_err(|e| BuildFailure::Passing(e.message))?;
        let Some(source) = source else {
            return Err(BuildFailure::Permanent(format!(
                "dependency {label} is not built and its source is unknown: build it first (POST /api/v1/components)"
            )));
        };
        if let Some(failed) = self.dependency_failed_before(label).await {
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
        let record = builds::read(&self.nats, &self.job.build_id).await.ok().flatten();
        let submitter = Submitter {
            requested_by: record.map(|r| r.requested_by).unwrap_or_default(),
            component_patterns: self.job.component_patterns.clone(),
            trigger: None,
            rebuilt_for_push: Vec::new(),
            // Built again with this build's chain, so that a cycle is named; a dependency that fails
            // again fails this build (see `dependency_failed_before`).
            rerun_failed: true,
        };
        let accepted = submit::queue(&self.nats, &self.settings, &request, &submitter, chain.to_vec())
            .await
            .map_err(|err| BuildFailure::Passing(err.message))?;
        Ok(format!("{label} (build {})", accepted.build_id))
    }

    /// The error of the dependency build named in this build's last waiting message, if it failed.
    async fn dependency_failed_before(&self, label: &str) -> Option<String> {
        let record = builds::read(&self.nats, &self.job.build_id).await.ok().flatten()?;
        let message = record.error_message?;
        let after = message.split(&format!("{label} (build ")).nth(1)?;
        let build_id = BuildId::parse(after.split(')').next()?).ok()?;
        let dependency = builds::read(&self.nats, &build_id).await.ok().flatten()?;
        (dependency.status == BuildStatus::Failed).then(|| dependency.error_message.unwrap_or_default())
    }

    async fn download(&self, object: &str, path: &Path) -> Result<(), BuildFailure> {
        let fetch =
            |err: &dyn std::fmt::Display| BuildFailure::Unavailable(format!("cannot fetch a dependency: {err}"));
        let mut reader = self.nats.stores.archives.get(object).await.map_err(|err| fetch(&err))?;
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|err| BuildFailure::Passing(format!("cannot write a dependency: {err}")))?;
        artifacts_runtime::attempt::copy_object("a dependency", &mut reader, &mut file).await?;
        Ok(())
    }
}
