//! `<prefix>.component.build`: checks a submission, records where the component's source is, and queues
//! the build (or answers with the identical build already queued or running). `<prefix>.triggered.component`:
//! the same queue for the builds a push asks for, sent by the git trigger.
//!
//! Only an explicit build request of a caller who may build the component records its source; changing
//! the repository an existing component is built from needs an admin key (409 otherwise), so nobody can
//! make a later lookup or push build their own code under another team's name.

use async_nats::Message;

use artifacts_engine::builder::ensure_buildable;
use artifacts_engine::git::{self, checked_url};
use artifacts_runtime::configuration::redact_url;
use artifacts_runtime::service::{Reply, Request, LOOKUP_HEADER};
use artifacts_runtime::{secrets, Nats, Settings};
use artifacts_schemas::messages::keys::Scope;
use artifacts_schemas::{
    normalize_repository, parse_json, AcceptedStatus, BuildAccepted, BuildId, BuildKind, BuildStatus, BuildWork,
    ComponentBuildRequest, ComponentBuildSummary, ComponentJob, ComponentName, ComponentQuery, ComponentSource,
    Failure, RequestError, RequestedBy, TagName, Trigger, TriggeredComponentBuild,
};
use artifacts_store::{Submission, Submitted};

use crate::SERVICE_NAME;

pub async fn answer(nats: &Nats, settings: &Settings, request: &Request) -> Reply {
    accept(nats, settings, request).await.into()
}

async fn accept(nats: &Nats, settings: &Settings, request: &Request) -> Result<BuildAccepted, RequestError> {
    let build: ComponentBuildRequest = parse_json(&request.message.payload)?;
    request.caller.require_for(Scope::Build, &build.component)?;
    let url = checked_url(&build.url, &settings.git)?;
    ensure_buildable(nats, settings, SERVICE_NAME, build.architecture).await?;
    let source = ComponentSource {
        component: build.component.clone(),
        url: url.as_str().to_owned(),
        api_key_id: Some(request.caller.key_id.clone()),
        component_patterns: request.caller.component_patterns().map(<[String]>::to_vec),
    };
    if let Some(held) = nats.store.record_source(&source, request.caller.scope() == Scope::Admin).await? {
        return Err(RequestError::new(
            Failure::Conflict,
            format!(
                "component {} is built from {}: only an admin key may change its repository",
                source.component,
                redact_url(&held.url)
            ),
        ));
    }
    let submitter = Submitter {
        requested_by: request.requested_by.clone(),
        component_patterns: source.component_patterns,
        trigger: None,
        rebuilt_for_push: Vec::new(),
        for_lookup: request.message.headers.as_ref().is_some_and(|h| h.get(LOOKUP_HEADER).is_some()),
        admin: request.caller.scope() == Scope::Admin,
    };
    queue(nats, settings, &build, &submitter, Vec::new()).await
}

/// A build a push asks for, from the git trigger (a stack-only subject: the trigger checked the push and
/// its sender); it runs with the rights of whoever recorded the component's source.
pub async fn answer_triggered(nats: &Nats, settings: &Settings, message: &Message) -> Reply {
    let triggered = async {
        let triggered: TriggeredComponentBuild = parse_json(&message.payload)?;
        ensure_buildable(nats, settings, SERVICE_NAME, triggered.request.architecture).await?;
        let submitter = Submitter {
            requested_by: RequestedBy::default(),
            component_patterns: triggered.component_patterns,
            trigger: Some(triggered.trigger),
            rebuilt_for_push: triggered.rebuilt_for_push,
            for_lookup: false,
            admin: false,
        };
        queue(nats, settings, &triggered.request, &submitter, Vec::new()).await
    };
    triggered.await.into()
}

/// Whether `trigger` is a push of the request's own repository and tag, so that its commit is the one to
/// build (a dependent rebuilt for a push elsewhere asks its repository).
fn pushed(trigger: &Trigger, request: &ComponentBuildRequest) -> bool {
    let pushed_ref = trigger.git_ref.strip_prefix("refs/tags/").or_else(|| trigger.git_ref.strip_prefix("refs/heads/"));
    normalize_repository(&trigger.repository) == normalize_repository(&request.url)
        && pushed_ref == Some(request.tag.as_str())
}

/// On whose behalf a build runs.
pub struct Submitter {
    pub requested_by: RequestedBy,
    /// The component patterns of the key the build runs for (its dependencies must match them).
    pub component_patterns: Option<Vec<String>>,
    /// The push a triggered build answers.
    pub trigger: Option<Trigger>,
    /// What the push has rebuilt so far (`component@tag`).
    pub rebuilt_for_push: Vec<String>,
    /// Whether a lookup of the absent component asks for the build. Its answer must not wait on git (a
    /// slow git host would hold the client): the worker resolves the tag when it clones. And an identical
    /// build that failed lately answers it rather than run again, or a client polling a failing
    /// component would start a build at every poll.
    pub for_lookup: bool,
    /// An admin key asked: with `force`, a released version may be built anew from the commit its tag
    /// names now (CONTRACT "immutable versions").
    pub admin: bool,
}

/// Why a released version is not built again: its tag names another commit than the one it was built
/// from.
pub fn moved_tag(component: &ComponentName, tag: &TagName, first: &str, now: &str) -> String {
    format!(
        "version {component}@{tag} was built from commit {} and is immutable; the tag now names commit {}: \
         release the change under a new tag (an admin may rebuild the version with force: true)",
        short(first),
        short(now)
    )
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Queues a checked request, or answers with the identical build: the same commit of the same component,
/// tag and architecture, queued, running, or (unless `force`) built successfully with the values of the
/// build secrets it read unchanged. `dependents` are the builds waiting for this one (for cycle
/// detection).
pub async fn queue(
    nats: &Nats,
    settings: &Settings,
    request: &ComponentBuildRequest,
    submitter: &Submitter,
    dependents: Vec<String>,
) -> Result<BuildAccepted, RequestError> {
    let url = checked_url(&request.url, &settings.git)?;
    if submitter.for_lookup {
        let pending = nats.store.pending_component_build(&request.component, &request.tag, request.architecture);
        if let Some(record) = pending.await? {
            let failed = record.status == BuildStatus::Failed;
            let status = if failed { AcceptedStatus::Failed } else { AcceptedStatus::Queued };
            let error = failed.then(|| record.error_message.unwrap_or_else(|| "the build failed".into()));
            return Ok(Submitted { build_id: record.build_id, status, error }.accepted(None));
        }
    }
    let (commit, is_tag) = match submitter.trigger.as_ref().filter(|t| pushed(t, request)) {
        Some(trigger) => (trigger.commit.clone(), trigger.git_ref.starts_with("refs/tags/")),
        // Left to the worker, which records the commit it checked out (and checks the version).
        None if submitter.for_lookup => (String::new(), false),
        None => {
            let resolved = git::resolve(&url, &request.tag, &settings.git).await?;
            (resolved.commit, resolved.is_tag)
        }
    };
    let replaces_version = request.force && submitter.admin;
    if is_tag && !replaces_version {
        let query = ComponentQuery {
            component: request.component.clone(),
            tag: request.tag.clone(),
            architecture: request.architecture,
            url: None,
        };
        if let Some(first) = nats.store.component(&query).await?.filter(|r| !r.commit.is_empty() && r.commit != commit)
        {
            return Err(RequestError::new(
                Failure::Conflict,
                moved_tag(&request.component, &request.tag, &first.commit, &commit),
            ));
        }
    }
    let summary = ComponentBuildSummary {
        url: redact_url(&request.url),
        component: request.component.clone(),
        tag: request.tag.clone(),
        architecture: request.architecture,
        commit,
        trigger: submitter.trigger.clone(),
    };
    let work = BuildWork::Component { request: summary, result: None };
    let secrets_changed = !request.force && read_secrets_changed(nats, &work, &request.component).await?;
    let submitted = nats
        .store
        .submit(Submission {
            work,
            requested_by: submitter.requested_by.clone(),
            job_subject: nats.subjects.jobs(BuildKind::Component, request.architecture),
            job: |build_id: &BuildId| ComponentJob {
                build_id: build_id.clone(),
                url: request.url.clone(),
                component: request.component.clone(),
                tag: request.tag.clone(),
                architecture: request.architecture,
                dependents: dependents.clone(),
                component_patterns: submitter.component_patterns.clone(),
                trigger: submitter.trigger.clone(),
                rebuilt_for_push: submitter.rebuilt_for_push.clone(),
                replaces_version,
            },
            rerun_failed: !submitter.for_lookup,
            force: request.force || secrets_changed,
            headers: artifacts_runtime::telemetry::request_headers(),
        })
        .await?;
    Ok(submitted.accepted(None))
}

/// Whether the last identical build that succeeded (the build `work`'s identical-work key names) read a
/// build secret whose value has changed since, or that `component` may no longer use: then it no
/// longer answers, and the commit is built anew. The secrets a commit reads are those its
/// `artifact.toml` lists, known only once it is cloned, so a build records them with its result (names
/// and keyed fingerprints, never values) rather than in the key; a change to a secret it did not list
/// builds nothing.
async fn read_secrets_changed(nats: &Nats, work: &BuildWork, component: &ComponentName) -> Result<bool, RequestError> {
    let Some(record) = nats.store.identical_build(work).await? else { return Ok(false) };
    let build_id = &record.build_id;
    let BuildWork::Component { result: Some(made), .. } = &record.work else { return Ok(false) };
    if record.status != BuildStatus::Succeeded || made.secrets.is_empty() {
        return Ok(false);
    }
    let names: Vec<String> = made.secrets.iter().map(|input| input.name.clone()).collect();
    let now = secrets::fingerprints(nats, component, Some(&names)).await?;
    let mut then = made.secrets.clone();
    then.sort();
    then.dedup();
    let changed = now != then;
    if changed {
        tracing::info!(%build_id, %component, "a build secret that the identical build read has changed since: building anew");
    }
    Ok(changed)
}
