//! This crate's envelopes and SBOMs checked by implementations no one here wrote: Python's `cryptography`
//! (`verify_dsse.py`, which computes DSSE's PAE itself), Python's `tarfile` and `hashlib` (`check_sbom.py`),
//! and the SPDX project's validator (`spdx-tools`, `validate_spdx.py`). Tampering must fail in both Rust and
//! Python.
//!
//! The Python used is `ARTIFACTS_PYTHON` if set, else the suite's virtual environment (`target/python`, which
//! `scripts/test` makes), else `python3` on the PATH; it needs `cryptography` and `spdx-tools`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;

use artifacts_provenance::dsse::{Envelope, VerifyError, IN_TOTO_PAYLOAD_TYPE};
use artifacts_provenance::key::SigningKey;
use artifacts_provenance::spdx::{self, ArchiveDependency, ArchiveFiles, ComponentSbom, DocumentInfo, GitSource};
use artifacts_provenance::statement::{self, BuildFacts, ResourceDescriptor, Statement};

/// The Python to run the scripts with, checked to import `modules`.
fn python(modules: &str) -> PathBuf {
    let python = match std::env::var_os("ARTIFACTS_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            let venv = target.join("python/bin/python3");
            if venv.exists() {
                venv
            } else {
                PathBuf::from("python3")
            }
        }
    };
    let probe = Command::new(&python).args(["-c", &format!("import {modules}")]).output();
    assert!(
        probe.as_ref().is_ok_and(|output| output.status.success()),
        "{} cannot import {modules}: install cryptography and spdx-tools into the suite's environment \
         (target/python/bin/pip install cryptography spdx-tools; scripts/test's ensure_python_tools does), or name \
         another Python in ARTIFACTS_PYTHON: {probe:?}",
        python.display()
    );
    python
}

/// Runs a script of this directory; its exit status, standard output and standard error.
fn run(script: &str, args: &[&Path]) -> (i32, String, String) {
    let modules = if script == "validate_spdx.py" { "spdx_tools" } else { "cryptography" };
    let output = Command::new(python(modules))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(script))
        .args(args)
        .output()
        .expect("python runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn at(text: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
}

fn statement(subject_digest: &str) -> Statement {
    Statement::provenance(BuildFacts {
        subject_name: "hello-1.0.0-amd64.tar.gz".into(),
        subject_digest: subject_digest.into(),
        build_type: statement::BUILD_TYPE_COMPONENT.into(),
        request: serde_json::json!({"component": "hello", "gitUrl": "https://example.com/o/hello.git", "tag": "v1.0.0", "note": "caf\u{e9} \u{1f680}"}),
        resolved_dependencies: vec![
            ResourceDescriptor::git_source("https://example.com/o/hello.git", &"c".repeat(40)),
            ResourceDescriptor::image("busybox:latest", &format!("sha256:{}", "d".repeat(64))).unwrap(),
            ResourceDescriptor::archive("components/libfoo/1.2.0/amd64", "libfoo@1.2.0", &"e".repeat(64)).unwrap(),
        ],
        builder_id: statement::DEFAULT_BUILDER_ID.into(),
        invocation_id: "0193a5b0-0000-7000-8000-000000000001".into(),
        started_on: at("2026-12-07T07:00:00Z"),
        finished_on: at("2026-12-07T07:00:09.5Z"),
    })
    .unwrap()
}

#[test]
fn an_envelope_this_crate_signed_verifies_with_python_cryptography() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::load_or_create(&dir.path().join("provenance-key.pem")).unwrap().key;
    let public = write(dir.path(), "key.pub.pem", key.public_key_pem().as_bytes());
    let digest = format!("sha256:{}", "ab".repeat(32));
    let statement = statement(&digest);
    let envelope = Envelope::sign_statement(&key, &statement);
    let file = write(dir.path(), "envelope.json", &envelope.to_json());

    let (status, stdout, stderr) = run("verify_dsse.py", &[&file, &public]);
    assert_eq!(status, 0, "Python refused the envelope: {stderr}");
    let verified: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(verified["keyid"], key.keyid(), "Python computes the same keyid from the PEM");
    assert_eq!(verified["payloadType"], IN_TOTO_PAYLOAD_TYPE);
    assert_eq!(verified["payload"], serde_json::to_value(&statement).unwrap());
    assert_eq!(verified["payload"]["subject"][0]["digest"]["sha256"], "ab".repeat(32));
    assert_eq!(
        verified["payload"]["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"],
        "c".repeat(40)
    );

    // And Rust agrees.
    let back = Envelope::from_json(&std::fs::read(&file).unwrap()).unwrap();
    assert!(back.verify_statement(key.public_key()).unwrap().names_digest(&digest));
}

#[test]
fn tampering_fails_in_rust_and_in_python() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let public = write(dir.path(), "key.pub.pem", key.public_key_pem().as_bytes());
    let envelope = Envelope::sign_statement(&key, &statement(&"ab".repeat(32)));

    // One byte of the payload changed: the commit's first digit.
    let mut payload = envelope.payload_bytes().unwrap();
    let at = payload.windows(40).position(|window| window == "c".repeat(40).as_bytes()).unwrap();
    payload[at] = b'd';
    let mut changed = envelope.clone();
    changed.payload = base64::engine::general_purpose::STANDARD.encode(&payload);
    assert_eq!(changed.verify(key.public_key()), Err(VerifyError::BadSignature { keyid: key.keyid().into() }));
    let file = write(dir.path(), "changed.json", &changed.to_json());
    let (status, _, stderr) = run("verify_dsse.py", &[&file, &public]);
    assert_eq!(status, 1, "Python took a changed payload: {stderr}");
    assert!(stderr.contains("does not verify"), "{stderr}");

    // The payload type changed (it is signed too).
    let mut retyped = envelope.clone();
    retyped.payload_type = "application/json".into();
    assert!(matches!(retyped.verify(key.public_key()), Err(VerifyError::BadSignature { .. })));
    let file = write(dir.path(), "retyped.json", &retyped.to_json());
    assert_eq!(run("verify_dsse.py", &[&file, &public]).0, 1);

    // Re-signed with another key, which says so.
    let other = SigningKey::generate();
    let resigned = Envelope::sign(&other, IN_TOTO_PAYLOAD_TYPE, &envelope.payload_bytes().unwrap());
    assert!(matches!(resigned.verify(key.public_key()), Err(VerifyError::OtherKey { .. })));
    let file = write(dir.path(), "resigned.json", &resigned.to_json());
    let (status, _, stderr) = run("verify_dsse.py", &[&file, &public]);
    assert_eq!(status, 1, "Python took another key's envelope: {stderr}");
    assert!(stderr.contains("no signature by key"), "{stderr}");
    // ... which verifies with that other key, in both.
    assert!(resigned.verify(other.public_key()).is_ok());
    let other_public = write(dir.path(), "other.pub.pem", other.public_key_pem().as_bytes());
    assert_eq!(run("verify_dsse.py", &[&file, &other_public]).0, 0);

    // Re-signed with another key that claims to be ours.
    let mut forged = resigned.clone();
    forged.signatures[0].keyid = key.keyid().into();
    assert!(matches!(forged.verify(key.public_key()), Err(VerifyError::BadSignature { .. })));
    let file = write(dir.path(), "forged.json", &forged.to_json());
    let (status, _, stderr) = run("verify_dsse.py", &[&file, &public]);
    assert_eq!(status, 1, "Python took a forged keyid: {stderr}");
    assert!(stderr.contains("does not verify"), "{stderr}");
}

/// A deterministic component archive: directories, files of several sizes (one past a tar block, one empty),
/// a symlink and a hard link, a non-ASCII name.
fn component_archive() -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    let mut append = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        header.set_mtime(1_700_000_000);
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        builder.append_data(&mut header, path, data).unwrap();
    };
    append("bin", tar::EntryType::Directory, b"", None);
    append("bin/hello", tar::EntryType::Regular, b"#!/bin/sh\necho hello\n", None);
    append("bin/hi", tar::EntryType::Symlink, b"", Some("hello"));
    append("bin/hello-again", tar::EntryType::Link, b"", Some("bin/hello"));
    append("lib", tar::EntryType::Directory, b"", None);
    let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    append("lib/libhello.a", tar::EntryType::Regular, &big, None);
    append("share/doc/caf\u{e9}.txt", tar::EntryType::Regular, "caf\u{e9}\n".as_bytes(), None);
    append("share/empty", tar::EntryType::Regular, b"", None);
    builder.into_inner().unwrap().finish().unwrap()
}

fn component_document(files: &ArchiveFiles, archive_sha256: &str) -> spdx::Document {
    ComponentSbom {
        component: "hello".into(),
        version: "1.0.0".into(),
        architecture: "amd64".into(),
        archive_name: "hello-1.0.0-amd64.tar.gz".into(),
        archive_digest: archive_sha256.into(),
        source: Some(GitSource { url: "https://example.com/o/hello.git".into(), commit: "c".repeat(40) }),
        dependencies: vec![ArchiveDependency {
            component: "libfoo".into(),
            version: "1.2.0".into(),
            architecture: Some("amd64".into()),
            digest: "e".repeat(64),
        }],
        builder_image: None,
        info: DocumentInfo {
            namespace: "http://127.0.0.1:8080/api/v1/builds/b1/sbom".into(),
            created: at("2026-12-07T07:00:09Z"),
            tool: "artifacts-provenance-test".into(),
        },
    }
    .document(files)
    .unwrap()
}

#[test]
fn an_sbom_this_crate_made_matches_its_archive_by_python_tarfile() {
    let dir = tempfile::tempdir().unwrap();
    let archive = component_archive();
    let read = ArchiveFiles::from_tar_gz(&archive[..]).unwrap();
    assert_eq!(read.files.len(), 5);
    let document = component_document(&read.files, &read.archive_sha256);
    let archive_file = write(dir.path(), "hello.tar.gz", &archive);
    let sbom_file = write(dir.path(), "sbom.json", &document.to_json());
    let (status, stdout, stderr) = run("check_sbom.py", &[&sbom_file, &archive_file]);
    assert_eq!(status, 0, "Python finds the SBOM differs from the archive: {stderr}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["files"], 5);
    assert!(spdx::check_archive(&document, &archive[..]).unwrap().is_ok());

    // A byte changed in a file of the archive: both find it.
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&archive[..]), &mut tar).unwrap();
    let at = tar.windows(6).position(|window| window == b"echo h").unwrap();
    tar[at + 5] = b'j';
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&tar).unwrap();
    let changed = gzip.finish().unwrap();
    let check = spdx::check_archive(&document, &changed[..]).unwrap();
    assert!(!check.is_ok());
    let mut paths: Vec<_> = check.files.changed.iter().map(|changed| changed.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["bin/hello", "bin/hello-again"]);
    assert_eq!(check.archive_digest_matches, Some(false));
    let changed_file = write(dir.path(), "changed.tar.gz", &changed);
    let (status, _, stderr) = run("check_sbom.py", &[&sbom_file, &changed_file]);
    assert_eq!(status, 1);
    assert!(stderr.contains("bin/hello:") && stderr.contains("the package's SHA256"), "{stderr}");
}

#[test]
fn sboms_are_valid_spdx_2_3_for_the_spdx_projects_validator() {
    let dir = tempfile::tempdir().unwrap();
    let archive = component_archive();
    let read = ArchiveFiles::from_tar_gz(&archive[..]).unwrap();
    let mut component = component_document(&read.files, &read.archive_sha256);
    let component_file = write(dir.path(), "component.json", &component.to_json());
    let image = spdx::ImageSbom {
        component: "web".into(),
        tag: "main".into(),
        architecture: "amd64".into(),
        image: spdx::ImageReference { reference: "127.0.0.1:5000/web:main".into(), digest: "a".repeat(64) },
        base_images: vec![spdx::ImageReference { reference: "busybox:latest".into(), digest: "b".repeat(64) }],
        layers: vec![spdx::Layer {
            digest: "1".repeat(64),
            size: 10,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }],
        os_packages: spdx::parse_dpkg_status(
            "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:2.36-9+deb12u4\n",
            Some("debian"),
        ),
        source: Some(GitSource { url: "https://example.com/o/web.git".into(), commit: "f".repeat(40) }),
        info: DocumentInfo {
            namespace: "http://127.0.0.1:8080/api/v1/builds/b2/sbom".into(),
            created: at("2026-12-07T07:00:09Z"),
            tool: "artifacts-provenance-test".into(),
        },
    }
    .document()
    .unwrap();
    let image_file = write(dir.path(), "image.json", &image.to_json());
    let (status, stdout, stderr) = run("validate_spdx.py", &[&component_file, &image_file]);
    assert_eq!(status, 0, "the SPDX validator refuses a document: {stderr}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["validated"], 2);

    // The validator is no rubber stamp: a file without its mandatory SHA1 is refused.
    component.files[0].checksums.retain(|checksum| checksum.algorithm != "SHA1");
    let broken = write(dir.path(), "broken.json", &component.to_json());
    let (status, _, stderr) = run("validate_spdx.py", &[&broken]);
    assert_eq!(status, 1);
    assert!(stderr.contains("SHA1"), "{stderr}");
}

/// An operator's own key, made by another implementation (`cryptography`, as `openssl genpkey -algorithm
/// ed25519` would): loaded from its PEM file, it signs envelopes that verify with the public key that
/// implementation derives, and the keyid is the same on both sides.
#[test]
fn a_key_made_elsewhere_is_loaded_and_its_envelopes_verify() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("operator.pem");
    let public = dir.path().join("operator.pub.pem");
    let made = Command::new(python("cryptography"))
        .args([
            "-c",
            "import sys\n\
             from cryptography.hazmat.primitives import serialization as s\n\
             from cryptography.hazmat.primitives.asymmetric import ed25519\n\
             key = ed25519.Ed25519PrivateKey.generate()\n\
             open(sys.argv[1], 'wb').write(key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))\n\
             open(sys.argv[2], 'wb').write(key.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))\n",
        ])
        .arg(&private)
        .arg(&public)
        .status()
        .unwrap();
    assert!(made.success());
    let opened = SigningKey::load_or_create(&private).unwrap();
    assert!(!opened.created);
    assert_eq!(opened.key.public_key_pem(), std::fs::read_to_string(&public).unwrap());
    let envelope = Envelope::sign_statement(&opened.key, &statement(&"ab".repeat(32)));
    let file = write(dir.path(), "envelope.json", &envelope.to_json());
    let (status, stdout, stderr) = run("verify_dsse.py", &[&file, &public]);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["keyid"], opened.key.keyid());
}
