//! The in-toto Statement v1 (in-toto/attestation, `spec/v1/statement.md`) with a SLSA provenance v1
//! predicate (`https://slsa.dev/provenance/v1`), as typed structs that serialize to the specifications'
//! JSON field names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dsse::VerifyError;

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// `predicateType` of SLSA provenance v1.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";

/// `buildDefinition.buildType` of a component build: the request is `externalParameters`, the source
/// commit, the builder image and the dependency archives are `resolvedDependencies`.
pub const BUILD_TYPE_COMPONENT: &str = "urn:artifact-storage:build-type:component:v1";

/// `buildDefinition.buildType` of an image build: the request is `externalParameters`, every base image
/// (and the source, when there is one) is in `resolvedDependencies`.
pub const BUILD_TYPE_IMAGE: &str = "urn:artifact-storage:build-type:image:v1";

/// `runDetails.builder.id` when the caller names no other: the service, without saying which instance.
pub const DEFAULT_BUILDER_ID: &str = "urn:artifact-storage:builder:v1";

/// A digest set: algorithm → lowercase hex (`sha256`, `gitCommit`, ...), ordered by algorithm.
pub type DigestSet = BTreeMap<String, String>;

/// The statement: what was built (`subject`) and how (`predicate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Subject>,
    pub predicate_type: String,
    pub predicate: Provenance,
}

/// An artifact the statement is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: DigestSet,
}

/// The SLSA provenance v1 predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    pub build_type: String,
    /// The build request, as the client sent it.
    pub external_parameters: serde_json::Value,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub internal_parameters: serde_json::Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

/// in-toto's ResourceDescriptor: at least one of `uri`, `digest`, `content`; here `uri` and `digest`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "DigestSet::is_empty")]
    pub digest: DigestSet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, serde_json::Value>,
}

/// The kind of a resolved dependency, as [`ResourceDescriptor::kind`] tells it from the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyKind {
    /// A git source: `digest.gitCommit`.
    Source,
    /// A container image: a `docker://` or `oci://` URI and `digest.sha256`.
    Image,
    /// Anything else with `digest.sha256` (a component archive).
    Archive,
    Other,
}

impl ResourceDescriptor {
    /// The source a build checked out: `uri` the git URL, `digest.gitCommit` the commit (40 or 64 hex).
    pub fn git_source(url: &str, commit: &str) -> Self {
        Self {
            uri: Some(url.to_owned()),
            digest: [("gitCommit".to_owned(), commit.to_ascii_lowercase())].into(),
            ..Self::default()
        }
    }

    /// A base image as pulled: `uri` `docker://<reference>` (e.g. `docker://busybox:latest`), `digest.sha256`
    /// its manifest digest (`sha256:<hex>` or `<hex>`).
    pub fn image(reference: &str, digest: &str) -> Result<Self, DigestError> {
        Ok(Self {
            uri: Some(format!("docker://{}", reference.trim_start_matches("docker://"))),
            digest: sha256_digest_set(digest)?,
            ..Self::default()
        })
    }

    /// A component archive: `uri` where it was read from (the caller's choice, e.g. the object store's
    /// name or the gateway's download URL), `name` `<component>@<version>`, `digest.sha256` the archive's.
    pub fn archive(uri: &str, name: &str, digest: &str) -> Result<Self, DigestError> {
        Ok(Self {
            uri: Some(uri.to_owned()),
            digest: sha256_digest_set(digest)?,
            name: Some(name.to_owned()),
            ..Self::default()
        })
    }

    pub fn kind(&self) -> DependencyKind {
        if self.digest.contains_key("gitCommit") {
            DependencyKind::Source
        } else if !self.digest.contains_key("sha256") {
            DependencyKind::Other
        } else if self.uri.as_deref().is_some_and(|uri| uri.starts_with("docker://") || uri.starts_with("oci://")) {
            DependencyKind::Image
        } else {
            DependencyKind::Archive
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    pub builder: Builder,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BuildMetadata>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub byproducts: Vec<ResourceDescriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Builder {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builder_dependencies: Vec<ResourceDescriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    /// RFC 3339, in UTC.
    #[serde(default, with = "rfc3339_utc", skip_serializing_if = "Option::is_none")]
    pub started_on: Option<OffsetDateTime>,
    #[serde(default, with = "rfc3339_utc", skip_serializing_if = "Option::is_none")]
    pub finished_on: Option<OffsetDateTime>,
}

/// RFC 3339 timestamps in UTC (`2026-12-07T07:05:32.123Z`), read in any offset.
mod rfc3339_utc {
    use serde::{Deserialize as _, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::{OffsetDateTime, UtcOffset};

    pub fn serialize<S: Serializer>(value: &Option<OffsetDateTime>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => {
                let text = value.to_offset(UtcOffset::UTC).format(&Rfc3339).map_err(serde::ser::Error::custom)?;
                serializer.serialize_str(&text)
            }
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<OffsetDateTime>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// What a build did, for [`Statement::provenance`].
#[derive(Debug, Clone)]
pub struct BuildFacts {
    /// The artifact: for an image the repository (`<registry>/<component>`), for a component
    /// `<component>-<version>-<architecture>.tar.gz` or what the service calls it.
    pub subject_name: String,
    /// The artifact's digest, `sha256:<hex>` or `<hex>`: the image's manifest digest, the archive's digest.
    pub subject_digest: String,
    /// [`BUILD_TYPE_COMPONENT`] or [`BUILD_TYPE_IMAGE`].
    pub build_type: String,
    /// The request, as JSON.
    pub request: serde_json::Value,
    /// What the worker actually used: the commit it checked out, the image digests it pulled, the
    /// archives it fetched.
    pub resolved_dependencies: Vec<ResourceDescriptor>,
    /// Usually [`DEFAULT_BUILDER_ID`], or a URI that names the instance.
    pub builder_id: String,
    /// The build id.
    pub invocation_id: String,
    pub started_on: OffsetDateTime,
    pub finished_on: OffsetDateTime,
}

/// A digest that is not `sha256:<64 hex>` nor `<64 hex>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a sha256 digest (sha256:<64 hex digits>): {0:?}")]
pub struct DigestError(pub String);

/// The lowercase hex of `digest`, given as `sha256:<hex>` or `<hex>`.
pub fn sha256_hex(digest: &str) -> Result<String, DigestError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    if hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(DigestError(digest.to_owned()))
    }
}

/// `{"sha256": <hex>}`.
pub fn sha256_digest_set(digest: &str) -> Result<DigestSet, DigestError> {
    Ok([("sha256".to_owned(), sha256_hex(digest)?)].into())
}

impl Statement {
    /// The SLSA provenance v1 statement of a build.
    pub fn provenance(facts: BuildFacts) -> Result<Self, DigestError> {
        Ok(Self {
            statement_type: STATEMENT_TYPE.to_owned(),
            subject: vec![Subject { name: facts.subject_name, digest: sha256_digest_set(&facts.subject_digest)? }],
            predicate_type: SLSA_PROVENANCE_V1.to_owned(),
            predicate: Provenance {
                build_definition: BuildDefinition {
                    build_type: facts.build_type,
                    external_parameters: facts.request,
                    internal_parameters: serde_json::Value::Null,
                    resolved_dependencies: facts.resolved_dependencies,
                },
                run_details: RunDetails {
                    builder: Builder {
                        id: facts.builder_id,
                        version: BTreeMap::new(),
                        builder_dependencies: Vec::new(),
                    },
                    metadata: Some(BuildMetadata {
                        invocation_id: Some(facts.invocation_id),
                        started_on: Some(facts.started_on),
                        finished_on: Some(facts.finished_on),
                    }),
                    byproducts: Vec::new(),
                },
            },
        })
    }

    /// Reads a statement, checking `_type` and `predicateType`.
    pub fn from_json(json: &[u8]) -> Result<Self, VerifyError> {
        let statement: Self = serde_json::from_slice(json).map_err(|err| VerifyError::Statement(err.to_string()))?;
        if statement.statement_type != STATEMENT_TYPE {
            return Err(VerifyError::StatementType {
                field: "_type",
                expected: STATEMENT_TYPE.to_owned(),
                found: statement.statement_type,
            });
        }
        if statement.predicate_type != SLSA_PROVENANCE_V1 {
            return Err(VerifyError::StatementType {
                field: "predicateType",
                expected: SLSA_PROVENANCE_V1.to_owned(),
                found: statement.predicate_type,
            });
        }
        Ok(statement)
    }

    /// Whether a subject has this sha256 digest (`sha256:<hex>` or `<hex>`, any case).
    pub fn names_digest(&self, digest: &str) -> bool {
        let Ok(hex) = sha256_hex(digest) else { return false };
        self.subject
            .iter()
            .any(|subject| subject.digest.get("sha256").is_some_and(|found| found.eq_ignore_ascii_case(&hex)))
    }

    /// The source commit(s) the build checked out: `(uri, gitCommit)` of each source dependency.
    pub fn sources(&self) -> impl Iterator<Item = (&str, &str)> {
        self.resolved(DependencyKind::Source)
            .map(|dependency| (dependency.uri.as_deref().unwrap_or_default(), dependency.digest["gitCommit"].as_str()))
    }

    /// The resolved dependencies of one kind.
    pub fn resolved(&self, kind: DependencyKind) -> impl Iterator<Item = &ResourceDescriptor> {
        self.predicate.build_definition.resolved_dependencies.iter().filter(move |dependency| dependency.kind() == kind)
    }

    /// `runDetails.metadata.invocationId`: the build id.
    pub fn invocation_id(&self) -> Option<&str> {
        self.predicate.run_details.metadata.as_ref().and_then(|metadata| metadata.invocation_id.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    }

    fn facts() -> BuildFacts {
        BuildFacts {
            subject_name: "hello-1.0.0-amd64.tar.gz".into(),
            subject_digest: format!("sha256:{}", "AB".repeat(32)),
            build_type: BUILD_TYPE_COMPONENT.into(),
            request: serde_json::json!({"component": "hello", "gitUrl": "https://example.com/o/r.git", "tag": "v1.0.0"}),
            resolved_dependencies: vec![
                ResourceDescriptor::git_source("https://example.com/o/r.git", &"c".repeat(40)),
                ResourceDescriptor::image("busybox:latest", &"d".repeat(64)).unwrap(),
                ResourceDescriptor::archive(
                    "artifacts://components/libfoo/1.2.0/amd64",
                    "libfoo@1.2.0",
                    &format!("sha256:{}", "e".repeat(64)),
                )
                .unwrap(),
            ],
            builder_id: DEFAULT_BUILDER_ID.into(),
            invocation_id: "0193a5b0-0000-7000-8000-000000000001".into(),
            started_on: at("2026-12-07T07:05:32.25+01:00"),
            finished_on: at("2026-12-07T06:06:00Z"),
        }
    }

    #[test]
    fn json_has_the_specifications_field_names() {
        let statement = Statement::provenance(facts()).unwrap();
        let json = serde_json::to_value(&statement).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "_type": "https://in-toto.io/Statement/v1",
                "subject": [{"name": "hello-1.0.0-amd64.tar.gz", "digest": {"sha256": "ab".repeat(32)}}],
                "predicateType": "https://slsa.dev/provenance/v1",
                "predicate": {
                    "buildDefinition": {
                        "buildType": BUILD_TYPE_COMPONENT,
                        "externalParameters": {"component": "hello", "gitUrl": "https://example.com/o/r.git", "tag": "v1.0.0"},
                        "resolvedDependencies": [
                            {"uri": "https://example.com/o/r.git", "digest": {"gitCommit": "c".repeat(40)}},
                            {"uri": "docker://busybox:latest", "digest": {"sha256": "d".repeat(64)}},
                            {"uri": "artifacts://components/libfoo/1.2.0/amd64", "digest": {"sha256": "e".repeat(64)}, "name": "libfoo@1.2.0"},
                        ],
                    },
                    "runDetails": {
                        "builder": {"id": DEFAULT_BUILDER_ID},
                        "metadata": {
                            "invocationId": "0193a5b0-0000-7000-8000-000000000001",
                            "startedOn": "2026-12-07T06:05:32.25Z",
                            "finishedOn": "2026-12-07T06:06:00Z",
                        },
                    },
                },
            })
        );
        let back = Statement::from_json(&serde_json::to_vec(&statement).unwrap()).unwrap();
        assert_eq!(back, statement);
        assert!(back.names_digest(&format!("sha256:{}", "ab".repeat(32))));
        assert!(!back.names_digest(&format!("sha256:{}", "ac".repeat(32))));
        assert_eq!(back.sources().collect::<Vec<_>>(), [("https://example.com/o/r.git", "c".repeat(40).as_str())]);
        assert_eq!(back.resolved(DependencyKind::Image).count(), 1);
        assert_eq!(back.resolved(DependencyKind::Archive).next().unwrap().name.as_deref(), Some("libfoo@1.2.0"));
        assert_eq!(back.invocation_id(), Some("0193a5b0-0000-7000-8000-000000000001"));
    }

    #[test]
    fn other_statements_are_refused() {
        let mut json = serde_json::to_value(Statement::provenance(facts()).unwrap()).unwrap();
        json["predicateType"] = "https://slsa.dev/provenance/v0.2".into();
        let err = Statement::from_json(&serde_json::to_vec(&json).unwrap()).unwrap_err();
        assert!(matches!(err, VerifyError::StatementType { field: "predicateType", .. }), "{err}");
        json["predicateType"] = SLSA_PROVENANCE_V1.into();
        json["_type"] = "https://in-toto.io/Statement/v0.1".into();
        assert!(matches!(
            Statement::from_json(&serde_json::to_vec(&json).unwrap()),
            Err(VerifyError::StatementType { field: "_type", .. })
        ));
        assert!(matches!(Statement::from_json(b"[]"), Err(VerifyError::Statement(_))));
    }

    #[test]
    fn digests_are_checked() {
        assert_eq!(sha256_hex(&format!("sha256:{}", "A".repeat(64))).unwrap(), "a".repeat(64));
        assert!(sha256_hex("sha256:abc").is_err());
        assert!(sha256_hex(&format!("sha512:{}", "a".repeat(64))).is_err());
        assert!(ResourceDescriptor::image("busybox", "latest").is_err());
        let mut bad = facts();
        bad.subject_digest = "nope".into();
        assert!(Statement::provenance(bad).is_err());
    }
}
