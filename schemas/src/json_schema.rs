//! JSON Schema for every message, for clients that are not written in Rust.

use std::path::Path;

use schemars::{schema_for, Schema};

use crate::messages::{build, component, image, keys, push, reply, secrets, submission};

/// Each message with the file its schema is written to.
pub fn all() -> Vec<(&'static str, Schema)> {
    vec![
        ("image-query.json", schema_for!(image::ImageQuery)),
        ("image-build-request.json", schema_for!(image::ImageBuildRequest)),
        ("image-lookup-reply.json", schema_for!(image::ImageLookupReply)),
        ("image-record.json", schema_for!(image::ImageRecord)),
        ("image-job.json", schema_for!(image::ImageJob)),
        ("image-build-summary.json", schema_for!(image::ImageBuildSummary)),
        ("image-build-result.json", schema_for!(image::ImageBuildResult)),
        ("component-query.json", schema_for!(component::ComponentQuery)),
        ("component-build-request.json", schema_for!(component::ComponentBuildRequest)),
        ("rebuilt-for-push.json", schema_for!(component::RebuiltForPush)),
        ("component-lookup-reply.json", schema_for!(component::ComponentLookupReply)),
        ("component-record.json", schema_for!(component::ComponentRecord)),
        ("component-job.json", schema_for!(component::ComponentJob)),
        ("component-build-summary.json", schema_for!(component::ComponentBuildSummary)),
        ("component-source.json", schema_for!(component::ComponentSource)),
        ("archive-transfer.json", schema_for!(component::ArchiveTransfer)),
        ("build-query.json", schema_for!(build::BuildQuery)),
        ("build-list-query.json", schema_for!(build::BuildListQuery)),
        ("build-list.json", schema_for!(build::BuildList)),
        ("build-record.json", schema_for!(build::BuildRecord)),
        ("build-accepted.json", schema_for!(submission::BuildAccepted)),
        ("triggered-component-build.json", schema_for!(submission::TriggeredComponentBuild)),
        ("triggered-image-build.json", schema_for!(submission::TriggeredImageBuild)),
        ("git-push-event.json", schema_for!(push::GitPushEvent)),
        ("error-reply.json", schema_for!(reply::ErrorReply)),
        ("key-create-request.json", schema_for!(keys::KeyCreateRequest)),
        ("key-created.json", schema_for!(keys::KeyCreated)),
        ("key-list.json", schema_for!(keys::KeyList)),
        ("whoami.json", schema_for!(keys::WhoAmI)),
        ("secret-put-request.json", schema_for!(secrets::SecretPutRequest)),
        ("secret-stored.json", schema_for!(secrets::SecretStored)),
        ("secret-list.json", schema_for!(secrets::SecretList)),
        ("secret-delete-request.json", schema_for!(secrets::SecretDeleteRequest)),
        ("secret-deleted.json", schema_for!(secrets::SecretDeleted)),
    ]
}

/// The exact text written for a schema, so that the drift test compares like with like.
pub fn render(schema: &Schema) -> String {
    serde_json::to_string_pretty(schema).expect("a schema is always serialisable") + "\n"
}

pub fn export(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, schema) in all() {
        std::fs::write(dir.join(file), render(&schema))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_json_schemas_match_the_types() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
        for (file, schema) in all() {
            let on_disk = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            assert!(
                on_disk == render(&schema),
                "schemas/json/{file} is out of date: run `cargo run -p artifacts-schemas --bin export-json-schemas`"
            );
        }
    }
}
