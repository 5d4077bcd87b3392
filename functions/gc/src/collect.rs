//! The collector: what the retention policy lets go.
//!
//! Kept: per target, the newest `retention.keep_successful` successful builds (or what the first
//! `retention.policies` entry whose pattern names the component says); the build each image or
//! component record names (the latest); every build a kept component build depends on; pinned builds;
//! failed and cancelled builds younger than `retention.failed_days`. Everything else goes: its registry
//! manifest (by digest, unless a kept build of the repository has the same one) or its component
//! archive, its log and identical-work key, then its index entries, and last its record, so that a
//! collection stopped half-way leaves only records whose artifacts the next one deletes again (deleting
//! what is gone is no error). Uploads (Dockerfiles and contexts) go once no remaining build names them
//! and they are a day old.
//!
//! Registry blobs: deleting a manifest frees no disk by itself. With `registry.storage_dir` set, each
//! collection then deletes the manifest lists no tag names (two builds publishing `latest` at once
//! leave one, [`registry::untagged_lists`]) and runs the registry's own `garbage-collect` there, between
//! pushes ([`artifacts_store::Store::registry_sweep`]); every run sweeps, so blobs a stopped collection left are swept by the next.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use artifacts_engine::registry;
use artifacts_runtime::nats::unavailable;
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::messages::build::ListStatus;
use artifacts_schemas::messages::manage::{GcReport, Removed};
use artifacts_schemas::{BuildId, BuildRecord, BuildStatus, BuildWork, ComponentName, ImageRepository, RequestError};
use artifacts_store::{List, Objects};

/// An index entry without a record is left alone this long: its record may be on its way.
const INDEX_GRACE: Duration = Duration::from_secs(600);
/// How long a collection waits for pushes in flight before it leaves the blob sweep to the next one.
const PUSHES_WAIT: Duration = Duration::from_secs(120);

/// Uploads younger than this stay, whoever refers to them: a submission may be on its way.
const UPLOAD_GRACE: Duration = Duration::from_secs(24 * 3600);

pub async fn collect(nats: &Nats, settings: &Settings, dry_run: bool) -> Result<GcReport, RequestError> {
    let started = time::OffsetDateTime::now_utc();
    let records = nats.store.all_builds().await?;
    let images = nats.store.all_images().await?;
    let components = nats.store.all_components().await?;

    let mut kept: BTreeSet<BuildId> = images.iter().map(|i| i.build_id.clone()).collect();
    kept.extend(components.iter().map(|c| c.build_id.clone()));
    let mut by_target: BTreeMap<String, Vec<&BuildRecord>> = BTreeMap::new();
    let now = time::OffsetDateTime::now_utc();
    for record in &records {
        let (_, failed_days) = settings.retention.for_component(record.work.component().as_str());
        let failed_before = now - Duration::from_secs(failed_days * 86_400);
        match record.status {
            _ if record.pinned => {
                kept.insert(record.build_id.clone());
            }
            BuildStatus::Queued | BuildStatus::Running => {
                kept.insert(record.build_id.clone());
            }
            BuildStatus::Succeeded => by_target.entry(target(&record.work)).or_default().push(record),
            BuildStatus::Failed | BuildStatus::Cancelled => {
                if record.finished_at.is_none_or(|finished| finished.0 > failed_before) {
                    kept.insert(record.build_id.clone());
                }
            }
        }
    }
    for builds in by_target.values_mut() {
        builds.sort_by(|a, b| b.build_id.cmp(&a.build_id));
        let (keep, _) = settings.retention.for_component(builds[0].work.component().as_str());
        kept.extend(builds.iter().take(keep).map(|r| r.build_id.clone()));
    }
    // What kept component builds depend on stays, transitively.
    let by_id: BTreeMap<&BuildId, &BuildRecord> = records.iter().map(|r| (&r.build_id, r)).collect();
    let mut pending: Vec<BuildId> = kept.iter().cloned().collect();
    while let Some(build_id) = pending.pop() {
        let Some(BuildWork::Component { result: Some(made), .. }) = by_id.get(&build_id).map(|r| &r.work) else {
            continue;
        };
        for dependency in &made.dependencies {
            if kept.insert(dependency.build_id.clone()) {
                pending.push(dependency.build_id.clone());
            }
        }
    }

    let kept_digests: BTreeSet<(String, String)> = records
        .iter()
        .filter(|r| kept.contains(&r.build_id))
        .filter_map(|r| match &r.work {
            BuildWork::Image { request, result: Some(made) } => {
                Some((ImageRepository::new(&request.component, &request.branch).to_string(), made.digest.clone()))
            }
            _ => None,
        })
        .collect();
    let mut removed = Removed::default();
    let logs = nats.jetstream.get_stream(nats.store.streams().logs_stream()).await.map_err(unavailable)?;
    for record in records.iter().filter(|r| !kept.contains(&r.build_id)) {
        removed.builds += 1;
        match &record.work {
            BuildWork::Image { request, result: Some(made) } => {
                let repository = ImageRepository::new(&request.component, &request.branch).to_string();
                removed.images += 1;
                if !dry_run && !kept_digests.contains(&(repository.clone(), made.digest.clone())) {
                    registry::delete_manifest(settings, &repository, &made.digest)
                        .await
                        .map_err(RequestError::unavailable)?;
                    // Its signed provenance beside it, as cosign names it (`sha256-<hex>.att`).
                    registry::delete_attestation(settings, &repository, &made.digest)
                        .await
                        .map_err(RequestError::unavailable)?;
                }
            }
            BuildWork::Component { result: Some(made), .. } => {
                removed.components += 1;
                removed.bytes += made.size;
                if !dry_run {
                    nats.store.remove_object(Objects::Archives, &made.object).await?;
                }
            }
            _ => {}
        }
        if !dry_run {
            nats.store.remove_attestations(&record.build_id).await?;
            let _ = logs.purge().filter(nats.subjects.build_log(&record.build_id)).await;
            // Otherwise the bucket keeps one key per distinct build ever made.
            nats.store.release_claim(&record.work, &record.build_id).await?;
        }
    }
    if !dry_run {
        // Index entries before records: a collection stopped between the two finds the records again.
        drop_from_index(nats, &records, &kept, started).await?;
        for record in records.iter().filter(|r| !kept.contains(&r.build_id)) {
            nats.store.remove_build(&record.build_id).await?;
        }
    }
    remove_uploads(nats, &records, &kept, dry_run, &mut removed).await?;
    if let (false, Some(storage)) = (dry_run, &settings.registry.storage_dir) {
        for (repository, digest) in registry::untagged_lists(storage).await {
            tracing::info!(%repository, %digest, "deleting a manifest list no tag names");
            registry::delete_manifest(settings, &repository, &digest).await.map_err(RequestError::unavailable)?;
        }
        let swept = nats.store.registry_sweep(PUSHES_WAIT, registry::sweep_blobs(storage)).await?;
        match swept {
            Some(Ok(swept)) => {
                tracing::info!(blobs = swept.blobs, bytes = swept.bytes, "swept the registry's unreferenced blobs");
                removed.blobs = swept.blobs;
                removed.bytes += swept.bytes;
            }
            Some(Err(err)) => {
                tracing::warn!(%err, "cannot sweep the registry's blobs; the next collection tries again")
            }
            None => tracing::info!("the registry's blobs are swept by a later collection"),
        }
    }
    for (what, count) in [
        ("builds", removed.builds),
        ("images", removed.images),
        ("components", removed.components),
        ("uploads", removed.uploads),
        ("blobs", removed.blobs),
    ] {
        metrics::counter!("artifacts_gc_removed_total", "kind" => what).increment(if dry_run { 0 } else { count });
    }
    metrics::counter!("artifacts_gc_removed_bytes_total").increment(if dry_run { 0 } else { removed.bytes });
    Ok(GcReport { status: ListStatus::Ok, dry_run, removed })
}

/// Removed builds leave the listings: the list of every build and each component's. So do ids without a
/// record that are older than [`INDEX_GRACE`] before this collection read the records: their
/// submission stopped between writing the index and the record (a new build's index entry comes first).
async fn drop_from_index(
    nats: &Nats,
    records: &[BuildRecord],
    kept: &BTreeSet<BuildId>,
    started: time::OffsetDateTime,
) -> Result<(), RequestError> {
    let ids = |keep: bool| -> BTreeSet<&str> {
        records.iter().filter(|r| kept.contains(&r.build_id) == keep).map(|r| r.build_id.as_str()).collect()
    };
    let (kept_ids, removed) = (ids(true), ids(false));
    let horizon = uuid_v7_prefix(started - INDEX_GRACE);
    let gone = |id: &str| removed.contains(id) || (id < horizon.as_str() && !kept_ids.contains(id));
    nats.store.remove_from_index(List::All, gone).await?;
    let components: BTreeSet<&ComponentName> = records.iter().map(|r| r.work.component()).collect();
    for component in components {
        nats.store.remove_from_index(List::Component(component), gone).await?;
    }
    Ok(())
}

/// Dockerfiles and contexts no remaining build names, a day after they were uploaded.
async fn remove_uploads(
    nats: &Nats,
    records: &[BuildRecord],
    kept: &BTreeSet<BuildId>,
    dry_run: bool,
    removed: &mut Removed,
) -> Result<(), RequestError> {
    let named: BTreeSet<String> = records
        .iter()
        .filter(|r| kept.contains(&r.build_id))
        .filter_map(|r| match &r.work {
            BuildWork::Image { request, .. } => Some(request),
            BuildWork::Component { .. } => None,
        })
        .flat_map(|request| {
            let hex = |digest: &str| digest.trim_start_matches("sha256:").to_owned();
            [
                Some(format!("dockerfiles/{}", hex(&request.dockerfile_digest))),
                request.context_digest.as_deref().map(|d| format!("contexts/{}", hex(d))),
            ]
        })
        .flatten()
        .collect();
    let old_enough = time::OffsetDateTime::now_utc() - UPLOAD_GRACE;
    let objects = nats.store.all_objects(Objects::Uploads).await?;
    for object in objects {
        if named.contains(&object.name) || object.modified.is_none_or(|modified| modified > old_enough) {
            continue;
        }
        removed.uploads += 1;
        removed.bytes += object.size as u64;
        if !dry_run {
            nats.store.remove_object(Objects::Uploads, &object.name).await?;
        }
    }
    Ok(())
}

/// The start of a UUIDv7 made at `at` (its first 48 bits are the Unix time in milliseconds), so that
/// ids compare with it as times do.
fn uuid_v7_prefix(at: time::OffsetDateTime) -> String {
    let millis = (at.unix_timestamp_nanos() / 1_000_000) as u64;
    format!("{:08x}-{:04x}", millis >> 16, millis & 0xffff)
}

/// What a build builds, as retention counts: kind, component, branch or tag, architecture.
fn target(work: &BuildWork) -> String {
    match work {
        BuildWork::Image { request, .. } => {
            format!("image {} {} {}", request.component, request.branch, request.architecture.short())
        }
        BuildWork::Component { request, .. } => {
            format!("component {} {} {}", request.component, request.tag, request.architecture.short())
        }
    }
}
