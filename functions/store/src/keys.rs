//! Every key format of every bucket, in one place. Keys must be valid NATS subject tokens whatever the
//! names hold: names are slugged with a hash ([`slug_with_hash`]), free text is hashed ([`hash`]).

use artifacts_schemas::names::slug_with_hash;
use artifacts_schemas::{
    normalize_repository, Architecture, BranchName, ComponentName, ComponentQuery, ImageQuery, TagName,
};

/// A hash of `parts` that is a valid key and subject token (hex SHA-256 of the parts, one per line).
pub fn hash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(parts.join("\n").as_bytes()))
}

/// `images`: the latest image of a component, branch and architecture.
pub fn image(query: &ImageQuery) -> String {
    query.record_key()
}

/// `components`: the latest stored component of a component, tag and architecture.
pub fn component(query: &ComponentQuery) -> String {
    query.record_key()
}

/// `sources`: where a component's source is known from.
pub fn source(component: &ComponentName) -> String {
    slug_with_hash(component.as_str())
}

/// `build_index`: shard `shard` of the list of every build. Shard 0 is `all`, the name of the one
/// unsharded list of earlier versions, so that the builds they listed stay listed.
pub(crate) fn build_list_all(shard: usize) -> String {
    match shard {
        0 => "all".into(),
        shard => format!("all.{shard}"),
    }
}

/// `build_index`: the list of one component's builds.
pub(crate) fn build_list_of(component: &ComponentName) -> String {
    format!("component/{}", slug_with_hash(component.as_str()))
}

/// `build_index`: the number of the page a list is filling.
pub(crate) fn build_list_head(list: &str) -> String {
    format!("{list}/head")
}

/// `build_index`: page `page` of a list.
pub(crate) fn build_list_page(list: &str, page: u64) -> String {
    format!("{list}/{page}")
}

/// `upload_grants`: the grants of an uploaded context to the key that uploaded it and to the component
/// it was uploaded for.
pub(crate) fn upload_grants(context_hex: &str, key_id: &str, component: &ComponentName) -> [String; 2] {
    [format!("{context_hex}/key/{key_id}"), format!("{context_hex}/component/{}", slug_with_hash(component.as_str()))]
}

/// `repositories`: a registry repository, by its name, which Docker's rules keep within the characters
/// a key may hold (`[a-z0-9._-]`, and `/` between path components).
pub fn repository(repository: &str) -> Result<String, String> {
    let valid = !repository.is_empty()
        && !repository.starts_with('.')
        && !repository.ends_with('.')
        && repository.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b));
    if valid {
        Ok(repository.to_owned())
    } else {
        Err(format!("{repository:?} is not a repository name"))
    }
}

/// `trigger_index`: the components built from a repository.
pub(crate) fn built_from(url: &str) -> String {
    format!("repository-{}", hash(&[&normalize_repository(url)]))
}

/// `trigger_index`: the dependants of a component version.
pub(crate) fn dependants(component: &ComponentName, tag: &TagName, architecture: Architecture) -> String {
    format!("dependants-{}", hash(&[component.as_str(), tag.as_str(), architecture.short()]))
}

/// `trigger_index`: set once the records from before the index were indexed.
pub(crate) const TRIGGER_INDEX_BACKFILLED: &str = "backfilled";

/// `registry_gate`: the one record of pushes in flight and the sweep.
pub(crate) const REGISTRY_GATE: &str = "gate";

/// `secrets`: a secret, by the hex of its name (names may hold `.` runs that keys may not).
pub(crate) fn secret(name: &str) -> String {
    hex::encode(name)
}

/// `pushes`: a push of a commit to a ref, handled once (per limited key, when one sent it).
pub fn push_handled(repository: &str, git_ref: &str, commit: &str, limited_key: Option<&str>) -> String {
    match limited_key {
        Some(key_id) => format!("handled-{}", hash(&[repository, git_ref, commit, "key", key_id])),
        None => format!("handled-{}", hash(&[repository, git_ref, commit])),
    }
}

/// `pushes`: the build a push started last for a component, tag and architecture.
pub fn push_target(component: &ComponentName, tag: &TagName, architecture: Architecture) -> String {
    format!("latest-{}", hash(&["component", component.as_str(), tag.as_str(), architecture.short()]))
}

/// `pushes`: the image build a push started last for a component, branch and architecture.
pub fn push_image_target(component: &ComponentName, branch: &BranchName, architecture: Architecture) -> String {
    format!("latest-{}", hash(&["image", component.as_str(), branch.as_str(), architecture.short()]))
}
