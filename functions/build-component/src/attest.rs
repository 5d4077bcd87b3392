//! What a successful component build attests (CONTRACT "Signed provenance and SBOM"): an SPDX 2.3
//! document listing every regular file of the archive as it was packed, and an in-toto statement with a
//! SLSA provenance v1 predicate whose subject is the archive's digest and whose resolved dependencies are
//! what the worker used: the commit it checked out, the builder image's digest on its engine and each
//! dependency archive's digest. The statement is signed (DSSE) with the service's key; both are stored
//! by build id.

use artifacts_engine::attempt::BuildFailure;
use artifacts_provenance::spdx::{
    ArchiveDependency, ArchiveFiles, ComponentSbom, DocumentInfo, GitSource, ImageReference,
};
use artifacts_provenance::statement::{BuildFacts, ResourceDescriptor, BUILD_TYPE_COMPONENT, DEFAULT_BUILDER_ID};
use artifacts_provenance::{Envelope, SigningKey, Statement};
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::{ComponentJob, ComponentRecord};
use artifacts_store::Attestation;

/// The image a build ran in, by the digest its engine knows it by.
pub async fn builder_image(docker: &bollard::Docker, image: &str) -> Result<ImageReference, BuildFailure> {
    let inspected = docker
        .inspect_image(image)
        .await
        .map_err(|err| BuildFailure::Passing(format!("cannot read the builder image {image}: {err}")))?;
    let digest = artifacts_engine::docker::image_digest(inspected)
        .ok_or_else(|| BuildFailure::Passing(format!("the engine names no digest for the builder image {image}")))?;
    Ok(ImageReference { reference: image.to_owned(), digest })
}

/// Signs and stores the provenance and SBOM of the build that made `record`.
pub async fn attest(
    nats: &Nats,
    settings: &Settings,
    job: &ComponentJob,
    record: &ComponentRecord,
    builder: ImageReference,
    files: &ArchiveFiles,
    started_on: time::OffsetDateTime,
) -> Result<(), BuildFailure> {
    let key = nats.provenance.key().map_err(|err| BuildFailure::Unavailable(err.message))?;
    let signed = sign(&key, &settings.public_url(), job, record, builder, files, started_on)?;
    let store = &nats.store;
    let unavailable =
        |err: artifacts_store::StoreError| BuildFailure::Unavailable(format!("cannot store the attestations: {err}"));
    store.put_attestation(&record.build_id, Attestation::Sbom, &signed.sbom).await.map_err(unavailable)?;
    store.put_attestation(&record.build_id, Attestation::Provenance, &signed.envelope).await.map_err(unavailable)?;
    Ok(())
}

/// A build's SBOM (SPDX JSON) and signed provenance (DSSE envelope JSON).
pub struct Signed {
    pub sbom: Vec<u8>,
    pub envelope: Vec<u8>,
}

/// Makes and signs the attestations of the build that made `record` (`public_url`: the gateway's, for
/// the documents' names and the dependencies' URIs).
pub fn sign(
    key: &SigningKey,
    public_url: &str,
    job: &ComponentJob,
    record: &ComponentRecord,
    builder: ImageReference,
    files: &ArchiveFiles,
    started_on: time::OffsetDateTime,
) -> Result<Signed, BuildFailure> {
    let archive_name = format!("{}-{}-{}.tar.gz", record.component, record.tag, record.architecture);
    let dependencies: Vec<ArchiveDependency> = record
        .dependencies
        .iter()
        .map(|used| ArchiveDependency {
            component: used.component.to_string(),
            version: used.tag.to_string(),
            architecture: Some(record.architecture.to_string()),
            digest: used.digest.clone(),
        })
        .collect();
    let finished_on = time::OffsetDateTime::now_utc();
    let unsignable = |err: artifacts_provenance::statement::DigestError| BuildFailure::Permanent(err.to_string());
    let sbom = ComponentSbom {
        component: record.component.to_string(),
        version: record.tag.to_string(),
        architecture: record.architecture.to_string(),
        archive_name: archive_name.clone(),
        archive_digest: record.digest.clone(),
        source: Some(GitSource { url: record.url.clone(), commit: record.commit.clone() }),
        dependencies,
        builder_image: Some(builder.clone()),
        info: DocumentInfo {
            namespace: format!("{public_url}/api/v1/builds/{}/sbom", record.build_id),
            created: finished_on,
            tool: format!("artifacts-build-component-{}", env!("CARGO_PKG_VERSION")),
        },
    }
    .document(files)
    .map_err(unsignable)?;

    let mut resolved = vec![
        ResourceDescriptor::git_source(&record.url, &record.commit),
        ResourceDescriptor::image(&builder.reference, &builder.digest).map_err(unsignable)?,
    ];
    for used in &record.dependencies {
        let name = format!("{}@{}", used.component, used.tag);
        let uri =
            format!("{public_url}/api/v1/components/{}/{}/{}/archive", used.component, used.tag, record.architecture);
        resolved.push(ResourceDescriptor::archive(&uri, &name, &used.digest).map_err(unsignable)?);
    }
    let statement = Statement::provenance(BuildFacts {
        subject_name: archive_name,
        subject_digest: record.digest.clone(),
        build_type: BUILD_TYPE_COMPONENT.to_owned(),
        request: serde_json::json!({
            "url": record.url,
            "component": job.component,
            "tag": job.tag,
            "architecture": job.architecture,
        }),
        resolved_dependencies: resolved,
        builder_id: DEFAULT_BUILDER_ID.to_owned(),
        invocation_id: record.build_id.to_string(),
        started_on,
        finished_on,
    })
    .map_err(unsignable)?;
    Ok(Signed { sbom: sbom.to_json(), envelope: Envelope::sign_statement(key, &statement).to_json() })
}
