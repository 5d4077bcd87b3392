//! Every check `artifacts verify` makes of a build's artifact, in one report: the envelope's signature by
//! the service's key, the statement's types, the subject's digest against the artifact's, the build it
//! names, and for a component the archive against its SBOM. Each check says whether it passed and why not;
//! the report also carries what the provenance says (source commit, builder, dependencies), for printing and
//! for `--json`.

use std::io::Read;

use serde::Serialize;

use crate::dsse::Envelope;
use crate::key::PublicKey;
use crate::spdx::{self, ArchiveFiles, Document};
use crate::statement::{sha256_hex, DependencyKind, ResourceDescriptor, Statement};

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `signature`, `statement`, `subject`, `build`, `sbom-files`, `sbom-subject`.
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// What the checks found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub checks: Vec<Check>,
    /// The signing key's id.
    pub keyid: String,
    /// The digest of the artifact as fetched, `sha256:<hex>`.
    pub artifact_digest: String,
    /// From the provenance (once its signature verified): the build id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder_id: Option<String>,
    /// The source: git URL and commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Base images and component archives the build used.
    pub dependencies: Vec<ResourceDescriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub uri: String,
    pub commit: String,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|check| check.passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|check| !check.passed)
    }

    fn check(&mut self, name: &'static str, passed: bool, detail: impl Into<String>) -> bool {
        self.checks.push(Check { name, passed, detail: detail.into() });
        passed
    }
}

/// What the verifier was told to expect.
#[derive(Debug, Clone, Default)]
pub struct Expected<'a> {
    /// The build id the lookup names (the provenance must be of that build).
    pub build_id: Option<&'a str>,
}

/// Checks an image: `envelope_json` signed by `key`, about the manifest digest `manifest_digest` (as the
/// lookup answers and the registry serves it).
pub fn verify_image(envelope_json: &[u8], key: &PublicKey, manifest_digest: &str, expected: &Expected<'_>) -> Report {
    let mut report = new_report(key, manifest_digest);
    verify_statement(&mut report, envelope_json, key, expected);
    report
}

/// Checks a component: `envelope_json` signed by `key`, about the archive read from `archive` (a `.tar.gz`,
/// read whole once), whose files must match `sbom_json`'s entry for entry.
pub fn verify_component(
    envelope_json: &[u8],
    key: &PublicKey,
    archive: impl Read,
    sbom_json: &[u8],
    expected: &Expected<'_>,
) -> Report {
    let read = ArchiveFiles::from_tar_gz(archive);
    let digest = read.as_ref().map(|read| format!("sha256:{}", read.archive_sha256)).unwrap_or_default();
    let mut report = new_report(key, &digest);
    if let Err(err) = &read {
        report.check("archive", false, err.to_string());
    }
    verify_statement(&mut report, envelope_json, key, expected);
    let Ok(read) = read else { return report };
    match Document::from_json(sbom_json) {
        Err(err) => {
            report.check("sbom-files", false, format!("the SBOM is not SPDX JSON: {err}"));
        }
        Ok(document) => {
            let files = spdx::check_files(&document, &read.files);
            report.check("sbom-files", files.is_ok(), files.to_string());
            match document.described_package().and_then(spdx::Package::sha256) {
                Some(sha256) if sha256.eq_ignore_ascii_case(&read.archive_sha256) => {
                    report.check("sbom-subject", true, format!("the SBOM describes sha256:{}", read.archive_sha256))
                }
                Some(sha256) => report.check(
                    "sbom-subject",
                    false,
                    format!("the SBOM describes sha256:{sha256}, the archive is sha256:{}", read.archive_sha256),
                ),
                None => report.check("sbom-subject", false, "the SBOM names no SHA256 of the archive it describes"),
            };
        }
    }
    report
}

fn new_report(key: &PublicKey, artifact_digest: &str) -> Report {
    Report {
        checks: Vec::new(),
        keyid: key.keyid().to_owned(),
        artifact_digest: artifact_digest.to_owned(),
        invocation_id: None,
        builder_id: None,
        source: None,
        dependencies: Vec::new(),
    }
}

fn verify_statement(report: &mut Report, envelope_json: &[u8], key: &PublicKey, expected: &Expected<'_>) {
    let envelope = match Envelope::from_json(envelope_json) {
        Ok(envelope) => envelope,
        Err(err) => {
            report.check("signature", false, err.to_string());
            return;
        }
    };
    if let Err(err) = envelope.verify(key) {
        report.check("signature", false, err.to_string());
        return;
    }
    report.check("signature", true, format!("signed by key {}", key.keyid()));
    let statement = match envelope.verify_statement(key) {
        Ok(statement) => statement,
        Err(err) => {
            report.check("statement", false, err.to_string());
            return;
        }
    };
    report.check("statement", true, "an in-toto Statement v1 with SLSA provenance v1");
    let subjects: Vec<String> = statement
        .subject
        .iter()
        .map(|subject| subject.digest.get("sha256").map(|hex| format!("sha256:{hex}")).unwrap_or_default())
        .collect();
    if sha256_hex(&report.artifact_digest).is_ok() && statement.names_digest(&report.artifact_digest) {
        report.check("subject", true, format!("the provenance is about {}", report.artifact_digest));
    } else {
        let digest = if report.artifact_digest.is_empty() { "unknown" } else { &report.artifact_digest };
        report.check(
            "subject",
            false,
            format!("the provenance is about {}, the artifact is {digest}", subjects.join(", ")),
        );
    }
    if let Some(build_id) = expected.build_id {
        match statement.invocation_id() {
            Some(found) if found == build_id => {
                report.check("build", true, format!("the provenance is of build {build_id}"))
            }
            found => report.check(
                "build",
                false,
                format!("the provenance is of build {}, the artifact of build {build_id}", found.unwrap_or("(none)")),
            ),
        };
    }
    fill(report, &statement);
}

fn fill(report: &mut Report, statement: &Statement) {
    report.invocation_id = statement.invocation_id().map(str::to_owned);
    report.builder_id = Some(statement.predicate.run_details.builder.id.clone());
    report.source =
        statement.sources().next().map(|(uri, commit)| Source { uri: uri.to_owned(), commit: commit.to_owned() });
    report.dependencies = statement
        .predicate
        .build_definition
        .resolved_dependencies
        .iter()
        .filter(|dependency| dependency.kind() != DependencyKind::Source)
        .cloned()
        .collect();
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::key::SigningKey;
    use crate::spdx::{ComponentSbom, DocumentInfo, GitSource};
    use crate::statement::{BuildFacts, BUILD_TYPE_COMPONENT, BUILD_TYPE_IMAGE, DEFAULT_BUILDER_ID};

    fn archive(contents: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        builder.append_data(&mut header, "bin/tool", contents).unwrap();
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::UNIX_EPOCH
    }

    fn facts(build_type: &str, digest: &str, build_id: &str) -> BuildFacts {
        BuildFacts {
            subject_name: "x".into(),
            subject_digest: digest.into(),
            build_type: build_type.into(),
            request: serde_json::json!({}),
            resolved_dependencies: vec![
                ResourceDescriptor::git_source("https://example.com/o/r.git", &"c".repeat(40)),
                ResourceDescriptor::archive("libfoo", "libfoo@1", &"e".repeat(64)).unwrap(),
            ],
            builder_id: DEFAULT_BUILDER_ID.into(),
            invocation_id: build_id.into(),
            started_on: now(),
            finished_on: now(),
        }
    }

    /// A component build's archive, SBOM and envelope.
    fn component(key: &SigningKey, contents: &[u8], build_id: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let bytes = archive(contents);
        let read = ArchiveFiles::from_tar_gz(&bytes[..]).unwrap();
        let sbom = ComponentSbom {
            component: "c".into(),
            version: "1".into(),
            architecture: "amd64".into(),
            archive_name: "c-1-amd64.tar.gz".into(),
            archive_digest: read.archive_sha256.clone(),
            source: Some(GitSource { url: "https://example.com/o/r.git".into(), commit: "c".repeat(40) }),
            dependencies: Vec::new(),
            builder_image: None,
            info: DocumentInfo { namespace: "urn:x".into(), created: now(), tool: "t".into() },
        }
        .document(&read.files)
        .unwrap()
        .to_json();
        let statement = Statement::provenance(facts(BUILD_TYPE_COMPONENT, &read.archive_sha256, build_id)).unwrap();
        (bytes, sbom, Envelope::sign_statement(key, &statement).to_json())
    }

    fn failed(report: &Report) -> Vec<&'static str> {
        report.failures().map(|check| check.name).collect()
    }

    #[test]
    fn a_component_passes_every_check() {
        let key = SigningKey::generate();
        let (bytes, sbom, envelope) = component(&key, b"tool", "b1");
        let report =
            verify_component(&envelope, key.public_key(), &bytes[..], &sbom, &Expected { build_id: Some("b1") });
        assert!(report.passed(), "{report:?}");
        assert_eq!(
            report.checks.iter().map(|check| check.name).collect::<Vec<_>>(),
            ["signature", "statement", "subject", "build", "sbom-files", "sbom-subject"]
        );
        assert_eq!(report.source, Some(Source { uri: "https://example.com/o/r.git".into(), commit: "c".repeat(40) }));
        assert_eq!(report.dependencies.len(), 1);
        assert_eq!(report.invocation_id.as_deref(), Some("b1"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["checks"][0],
            serde_json::json!({"name": "signature", "passed": true, "detail": format!("signed by key {}", key.keyid())})
        );
    }

    #[test]
    fn each_tampering_names_its_check() {
        let key = SigningKey::generate();
        let (bytes, sbom, envelope) = component(&key, b"tool", "b1");
        let expected = Expected { build_id: Some("b1") };

        // A byte of the stored archive changed: another digest, another file.
        let (changed, _, _) = component(&key, b"toot", "b1");
        let report = verify_component(&envelope, key.public_key(), &changed[..], &sbom, &expected);
        assert_eq!(failed(&report), ["subject", "sbom-files", "sbom-subject"]);
        assert!(report.checks[4].detail.contains("bin/tool changed"), "{:?}", report.checks[4]);

        // Re-signed with another key.
        let other = SigningKey::generate();
        let resigned = Envelope::sign(
            &other,
            crate::dsse::IN_TOTO_PAYLOAD_TYPE,
            &Envelope::from_json(&envelope).unwrap().payload_bytes().unwrap(),
        );
        let report = verify_component(&resigned.to_json(), key.public_key(), &bytes[..], &sbom, &expected);
        assert_eq!(failed(&report), ["signature"]);
        assert!(report.checks[0].detail.contains("no signature is by key"), "{:?}", report.checks[0]);
        assert_eq!(report.source, None, "nothing is taken from an unverified provenance");

        // The provenance of another build (of other bytes).
        let (_, _, another) = component(&key, b"other", "b2");
        let report = verify_component(&another, key.public_key(), &bytes[..], &sbom, &expected);
        assert_eq!(failed(&report), ["subject", "build"]);

        // Not an archive.
        let report = verify_component(&envelope, key.public_key(), &b"not gzip"[..], &sbom, &expected);
        assert!(failed(&report).contains(&"archive"));
        assert!(!report.passed());

        // A payload byte changed.
        let mut json: serde_json::Value = serde_json::from_slice(&envelope).unwrap();
        let mut payload = Envelope::from_json(&envelope).unwrap().payload_bytes().unwrap();
        let at = payload.iter().position(|byte| *byte == b'c').unwrap();
        payload[at] = b'C';
        json["payload"] = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &payload).into();
        let report = verify_component(json.to_string().as_bytes(), key.public_key(), &bytes[..], &sbom, &expected);
        assert_eq!(failed(&report), ["signature"]);
        assert!(report.checks[0].detail.contains("does not verify"));
    }

    #[test]
    fn an_image() {
        let key = SigningKey::generate();
        let digest = format!("sha256:{}", "a".repeat(64));
        let statement = Statement::provenance(facts(BUILD_TYPE_IMAGE, &digest, "b9")).unwrap();
        let envelope = Envelope::sign_statement(&key, &statement).to_json();
        let report = verify_image(&envelope, key.public_key(), &digest, &Expected::default());
        assert!(report.passed(), "{report:?}");
        assert_eq!(report.checks.len(), 3);
        let report = verify_image(
            &envelope,
            key.public_key(),
            &format!("sha256:{}", "b".repeat(64)),
            &Expected { build_id: Some("b9") },
        );
        assert_eq!(failed(&report), ["subject"]);
        let mut garbage = Vec::new();
        garbage.write_all(b"{").unwrap();
        assert_eq!(failed(&verify_image(&garbage, key.public_key(), &digest, &Expected::default())), ["signature"]);
    }
}
