//! What one push rebuilds. See the crate documentation for the rules.

use std::time::Duration;

use tokio::io::AsyncReadExt;

use artifacts_store::{keys, Objects, StoredKeyEntry};

use artifacts_engine::attempt::finish;
use artifacts_engine::git::{self, checked_url};
use artifacts_runtime::auth::ADMIN_KEY_ID;
use artifacts_runtime::jobs::{Delivery, Outcome};
use artifacts_runtime::metrics::count_push_refused;
use artifacts_runtime::service::call_stack_only;
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::messages::keys::{glob_matches, Scope};
use artifacts_schemas::{
    normalize_repository, Architecture, BranchName, BuildAccepted, BuildId, BuildKind, BuildRecord, BuildStatus,
    BuildWork, ComponentBuildRequest, ComponentName, ComponentQuery, ComponentSource, Failure, GitPushEvent,
    ImageBuildRequest, ImageQuery, RebuiltForPush, RequestError, TagName, Timestamp, Trigger, TriggeredComponentBuild,
    TriggeredImageBuild,
};

/// A push: submits the builds it asks for and returns; their dependents follow when they succeed
/// ([`handle_dependents`]).
pub async fn handle(nats: &Nats, settings: &Settings, event: GitPushEvent, delivery: Delivery) -> Outcome {
    match handle_push(nats, settings, &event).await {
        Ok(()) => Outcome::Done,
        Err(err) => {
            tracing::warn!(%err, repository = %event.repository, "cannot handle a push now; retrying");
            Outcome::Retry(retry_after(delivery.delivered))
        }
    }
}

/// A component a push rebuilt has been built: rebuilds the components built on it, each once per push.
pub async fn handle_dependents(nats: &Nats, settings: &Settings, built: RebuiltForPush, delivery: Delivery) -> Outcome {
    match rebuild_dependents(nats, settings, &built).await {
        Ok(()) => Outcome::Done,
        Err(err) => {
            tracing::warn!(%err, component = %built.component, "cannot rebuild dependents now; retrying");
            Outcome::Retry(retry_after(delivery.delivered))
        }
    }
}

/// The pause before delivery `delivered + 1` of a push that could not be handled (a build function or
/// JetStream away): 5 s more at each delivery, so a longer outage is waited out rather than retried
/// often (nine pauses: 225 s).
pub fn retry_after(delivered: i64) -> Duration {
    Duration::from_secs(5 * delivered.clamp(1, 12) as u64)
}

/// What a push asks for: component builds (each with the component patterns it runs with), and the
/// components whose images on the pushed branch are rebuilt.
#[derive(Debug, Default)]
pub struct Matched {
    pub components: Vec<(ComponentBuildRequest, Option<Vec<String>>)>,
    pub images_of: Vec<ComponentName>,
    /// The clone URLs the matched components were recorded with (each once), where the ref is resolved.
    pub urls: Vec<String>,
}

impl Matched {
    /// Keeps what `sender` may build; returns the components it may not.
    fn keep_allowed(&mut self, sender: &Sender) -> Vec<String> {
        let mut refused: Vec<String> = Vec::new();
        let mut allowed = |component: &ComponentName| {
            let allowed = sender.allows(component);
            if !allowed && !refused.iter().any(|c| c == component.as_str()) {
                refused.push(component.as_str().to_owned());
            }
            allowed
        };
        self.components.retain(|(request, _)| allowed(&request.component));
        self.images_of.retain(|component| allowed(component));
        refused
    }

    fn is_empty(&self) -> bool {
        self.components.is_empty() && self.images_of.is_empty()
    }
}

/// Whose limits a push carries. A webhook's delivery (signed by the forge) and the bootstrap admin key's
/// events have none; an event sent over NATS with a managed key rebuilds only the components that key
/// may build, read again when the push is handled (a revoked or expired key's events build nothing).
#[derive(Debug)]
enum Sender {
    Unlimited,
    Limited { key_id: String, patterns: Vec<String> },
    Refused(String),
}

impl Sender {
    async fn of(nats: &Nats, trigger: &Trigger) -> Result<Self, RequestError> {
        let Some(key_id) = trigger.api_key_id.as_deref() else { return Ok(Self::Unlimited) };
        if key_id == ADMIN_KEY_ID {
            return Ok(Self::Unlimited);
        }
        let StoredKeyEntry::Key(stored) = nats.store.stored_key(key_id).await? else {
            return Ok(Self::Refused(format!("the key {key_id} that sent it is revoked")));
        };
        let info = stored.info;
        if info.expires_at.is_some_and(|at| at <= Timestamp::now()) {
            return Ok(Self::Refused(format!("the key {key_id} that sent it has expired")));
        }
        if info.scope() < Some(Scope::Build) {
            return Ok(Self::Refused(format!("the key {key_id} that sent it lacks the build scope")));
        }
        Ok(match info.components {
            None => Self::Unlimited,
            Some(patterns) => Self::Limited { key_id: key_id.to_owned(), patterns },
        })
    }

    fn allows(&self, component: &ComponentName) -> bool {
        match self {
            Self::Unlimited => true,
            Self::Limited { patterns, .. } => patterns.iter().any(|p| glob_matches(p, component.as_str())),
            Self::Refused(_) => false,
        }
    }
}

/// What a push of `git_ref` (`refs/tags/…` or `refs/heads/…`) to `repository` rebuilds, read from the
/// trigger index: a few reads per component built from the repository, whatever the history holds.
pub async fn matching(nats: &Nats, repository: &str, git_ref: &str) -> Result<Matched, RequestError> {
    let mut matched = Matched::default();
    let (tag, branch) = (git_ref.strip_prefix("refs/tags/"), git_ref.strip_prefix("refs/heads/"));
    if tag.is_none() && branch.is_none() {
        return Ok(matched);
    }
    for (source, architectures) in nats.store.built_from(repository).await? {
        if !matched.urls.contains(&source.url) {
            matched.urls.push(source.url.clone());
        }
        if let Some(tag) = tag {
            let Ok(tag) = TagName::parse(tag) else { continue };
            for &architecture in &architectures {
                matched.components.push(rebuild(&source, &tag, architecture));
            }
            continue;
        }
        let branch = branch.unwrap_or_default();
        if let Ok(tag) = TagName::parse(branch) {
            for &architecture in &architectures {
                let query =
                    ComponentQuery { component: source.component.clone(), tag: tag.clone(), architecture, url: None };
                if nats.store.component(&query).await?.is_some() {
                    matched.components.push(rebuild(&source, &tag, architecture));
                }
            }
        }
        matched.images_of.push(source.component.clone());
    }
    Ok(matched)
}

async fn handle_push(nats: &Nats, settings: &Settings, event: &GitPushEvent) -> Result<(), RequestError> {
    let repository = normalize_repository(&event.repository);
    let git_ref = &event.git_ref;
    let nothing = |why: &str| -> Result<(), RequestError> {
        tracing::info!(%repository, %git_ref, commit = %event.after, api_key_id = ?event.api_key_id, "the push built nothing: {why}");
        Ok(())
    };
    if event.is_deletion() {
        return nothing("a deleted ref builds nothing");
    }
    let mut trigger = event.trigger();
    let sender = Sender::of(nats, &trigger).await?;
    if let Sender::Refused(why) = &sender {
        return nothing(why);
    }
    let mut matched = matching(nats, &repository, git_ref).await?;
    if matched.is_empty() {
        return nothing("nothing this service built comes from that repository and ref");
    }
    let refused = matched.keep_allowed(&sender);
    if !refused.is_empty() {
        tracing::info!(%repository, %git_ref, api_key_id = ?event.api_key_id, components = %refused.join(", "), "the key that sent the push may not build these components: not rebuilt");
    }
    if matched.is_empty() {
        return nothing("the key that sent it may build none of the components built from that repository");
    }
    // What is built is the commit the ref names in the repository, whatever the event says: a made-up
    // commit id neither starts a build nor ends up in a record.
    let commit = match resolve(settings, &matched.urls, git_ref).await? {
        Ok(commit) => commit,
        Err(why) => return nothing(&why),
    };
    if commit != event.after {
        tracing::info!(%repository, %git_ref, claimed = %event.after, %commit, "the event names another commit than the ref does: the ref's commit is built");
    }
    trigger.commit = commit.clone();
    // One push of a commit is handled once. A limited key's push is handled for its components only, so
    // the forge's own delivery of the same commit still rebuilds the others (identical builds are joined).
    let limited_key = match &sender {
        Sender::Limited { key_id, .. } => Some(key_id.as_str()),
        _ => None,
    };
    let handled = keys::push_handled(&repository, git_ref, &commit, limited_key);
    if nats.store.push_handled(&handled).await? {
        return nothing(&format!("commit {commit} of that ref was handled already"));
    }
    let Matched { components: rebuilds, images_of, .. } = matched;
    if let Some(branch) = git_ref.strip_prefix("refs/heads/").and_then(|b| BranchName::parse(b).ok()) {
        for component in &images_of {
            rebuild_images(nats, settings, component, &branch, &trigger).await?;
        }
    }
    tracing::info!(%repository, %git_ref, %commit, components = rebuilds.len(), "push matched");
    for (request, component_patterns) in rebuilds {
        let target = target_key(&request);
        let triggered = TriggeredComponentBuild {
            request,
            component_patterns,
            trigger: trigger.clone(),
            rebuilt_for_push: Vec::new(),
        };
        let queued = submit(nats, settings, BuildKind::Component, &triggered).await;
        supersede(nats, &target, queued).await?;
    }
    let record = serde_json::to_vec(event).expect("events serialise");
    nats.store.mark_push_handled(&handled, record).await?;
    Ok(())
}

/// The commit `git_ref` names in the repository, asked of the clone URLs its components were recorded
/// with (git's time limit and checks apply). `Ok(Err(why))` when no URL names one: the ref is gone or was
/// never there, or the repository cannot be read; an `Err` when asking may succeed later.
async fn resolve(settings: &Settings, urls: &[String], git_ref: &str) -> Result<Result<String, String>, RequestError> {
    let name = git_ref.strip_prefix("refs/heads/").or_else(|| git_ref.strip_prefix("refs/tags/")).unwrap_or(git_ref);
    let Ok(tag) = TagName::parse(name) else {
        return Ok(Err(format!("{git_ref} names no branch or tag this service builds")));
    };
    let mut why = String::from("no repository to ask");
    for url in urls {
        let asked = async { git::resolve(&checked_url(url, &settings.git)?, &tag, &settings.git).await }.await;
        match asked {
            Ok(resolved) => return Ok(Ok(resolved.commit)),
            Err(err) if err.failure.code() >= 500 => return Err(err),
            Err(err) => why = format!("the repository does not name a commit for it: {}", err.message),
        }
    }
    Ok(Err(why))
}

async fn rebuild_dependents(nats: &Nats, settings: &Settings, built: &RebuiltForPush) -> Result<(), RequestError> {
    let dependents = nats.store.dependants_of(&built.component, &built.tag, built.architecture).await?;
    let dependents = dependents.iter().filter(|r| !built.rebuilt.contains(&format!("{}@{}", r.component, r.tag)));
    // A push sent with a key rebuilds, dependents included, only what that key may build.
    let sender = Sender::of(nats, &built.trigger).await?;
    for dependent in dependents {
        if !sender.allows(&dependent.component) {
            tracing::info!(component = %dependent.component, api_key_id = ?built.trigger.api_key_id, "the key that sent the push may not build this dependent: not rebuilt");
            continue;
        }
        let Some(source) = nats.store.source(&dependent.component).await? else { continue };
        let (mut request, patterns) = rebuild(&source, &dependent.tag, dependent.architecture);
        // Its own commit may be unchanged: what changed is a dependency, so build it again regardless.
        request.force = true;
        let target = target_key(&request);
        let triggered = TriggeredComponentBuild {
            request,
            component_patterns: patterns,
            trigger: built.trigger.clone(),
            rebuilt_for_push: built.rebuilt.clone(),
        };
        let queued = submit(nats, settings, BuildKind::Component, &triggered).await;
        supersede(nats, &target, queued).await?;
    }
    Ok(())
}

/// A rebuild of a tracked component, with the component patterns of the key that recorded its source:
/// a push runs builds with the rights of whoever registered the repository, never more.
fn rebuild(
    source: &ComponentSource,
    tag: &TagName,
    architecture: Architecture,
) -> (ComponentBuildRequest, Option<Vec<String>>) {
    let request = ComponentBuildRequest {
        url: source.url.clone(),
        component: source.component.clone(),
        tag: tag.clone(),
        architecture,
        force: false,
    };
    (request, source.component_patterns.clone())
}

/// Hands a build a push asks for to the build function of `kind` (a stack-only subject), which queues it
/// as it queues its own submissions: identical work is joined, so a request sent again is harmless. The
/// time allowed covers the function asking git for a dependent's commit.
async fn submit(
    nats: &Nats,
    settings: &Settings,
    kind: BuildKind,
    triggered: &impl serde::Serialize,
) -> Result<BuildAccepted, RequestError> {
    let payload = serde_json::to_vec(triggered).expect("requests serialise");
    let timeout = settings.request_timeout() + git::RESOLVE_TIMEOUT;
    call_stack_only(nats, &nats.subjects.triggered_builds(kind), payload.into(), timeout).await.into_result()
}

fn target_key(request: &ComponentBuildRequest) -> String {
    keys::push_target(&request.component, &request.tag, request.architecture)
}

/// Rebuilds each image of `component` on `branch` from the Dockerfile and context of its last build.
async fn rebuild_images(
    nats: &Nats,
    settings: &Settings,
    component: &ComponentName,
    branch: &BranchName,
    trigger: &Trigger,
) -> Result<(), RequestError> {
    for architecture in Architecture::ALL {
        let query = ImageQuery { component: component.clone(), branch: branch.clone(), architecture };
        let Some(image) = nats.store.image(&query).await? else { continue };
        let Some(last) = nats.store.build(&image.build_id).await? else { continue };
        let BuildWork::Image { request: summary, .. } = last.work else { continue };
        let Some(dockerfile) = dockerfile_text(nats, &summary.dockerfile_digest).await else { continue };
        let request = ImageBuildRequest {
            dockerfile,
            component: summary.component,
            branch: summary.branch,
            architecture: summary.architecture,
            build_args: summary.build_args,
            target: summary.target,
            context: summary
                .context_digest
                .and_then(|d| d.strip_prefix("sha256:").map(|hex| format!("contexts/{hex}"))),
            // The same Dockerfile and context as the last build: a push asks for a fresh build of them.
            force: true,
        };
        let key = keys::push_image_target(&image.component, &image.branch, image.architecture);
        let triggered = TriggeredImageBuild { request, trigger: trigger.clone() };
        let queued = submit(nats, settings, BuildKind::Image, &triggered).await;
        supersede(nats, &key, queued).await?;
    }
    Ok(())
}

async fn dockerfile_text(nats: &Nats, digest: &str) -> Option<String> {
    let object = format!("dockerfiles/{}", digest.strip_prefix("sha256:")?);
    let mut reader = nats.store.object(Objects::Uploads, &object).await.ok()?;
    let mut text = String::new();
    reader.read_to_string(&mut text).await.ok()?;
    Some(text)
}

/// Records a triggered build as the latest for its target, and cancels the build an older push queued for
/// the same target if it has not started. A refused submission (an architecture no worker builds any
/// more) is logged and skipped; an unavailable service is an error, so the push is tried again.
async fn supersede(
    nats: &Nats,
    target: &str,
    queued: Result<BuildAccepted, RequestError>,
) -> Result<Option<BuildId>, RequestError> {
    let accepted = match queued {
        Ok(accepted) => accepted,
        Err(err) if err.failure.code() >= 500 => return Err(err),
        Err(err) if err.failure == Failure::Conflict => {
            // A released version whose tag was moved: it keeps its first build.
            tracing::warn!(target_key = %target, why = %err.message, "the push moved a released version's tag: nothing built");
            count_push_refused("moved_tag");
            return Ok(None);
        }
        Err(err) => {
            tracing::warn!(%err, "a triggered build was refused");
            count_push_refused("refused");
            return Ok(None);
        }
    };
    let new = accepted.build_id;
    if let Some(older) = nats.store.pushed_build(target).await?.filter(|older| *older != new) {
        let message = format!("superseded by build {new} for a newer push");
        nats.store
            .update_build(&older, |record: &mut BuildRecord| {
                if record.status == BuildStatus::Queued {
                    finish(record, BuildStatus::Cancelled, None, Some(message.clone()));
                }
            })
            .await
            .ok();
    }
    nats.store.set_pushed_build(target, &new).await?;
    tracing::info!(build_id = %new, "triggered a build");
    Ok(Some(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_that_cannot_be_handled_waits_about_four_minutes_in_all_before_its_dead_letter() {
        let pauses: Duration = (1..crate::MAX_DELIVERIES).map(retry_after).sum();
        assert_eq!(pauses, Duration::from_secs(225));
        assert_eq!(retry_after(1), Duration::from_secs(5));
        assert_eq!(retry_after(100), Duration::from_secs(60), "a pause is a minute at most");
    }
}
