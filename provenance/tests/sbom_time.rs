//! What provenance and the SBOM cost a 100 MiB component build, against the part of the build they sit
//! beside: packing the output (tar, gzip at the default level, as `build-component`'s output.rs does).
//! A measurement, not a check of this machine's speed, so it is ignored by default:
//!
//! ```sh
//! cargo test -p artifacts-provenance --release --test sbom_time -- --ignored --nocapture
//! ```
//!
//! It prints the times of: packing; hashing the files while packing ([`FileHasher`], what the build should
//! do); reading the archive again to list its files (what `artifacts verify` does, and what a build would pay
//! if it hashed after the fact); making the SPDX document, the statement and the signed envelope.

use std::io::Write as _;
use std::time::{Duration, Instant};

use artifacts_provenance::dsse::Envelope;
use artifacts_provenance::key::SigningKey;
use artifacts_provenance::spdx::{self, ArchiveFiles, ComponentSbom, DocumentInfo, FileHasher, GitSource};
use artifacts_provenance::statement::{self, BuildFacts, ResourceDescriptor, Statement};

/// A component's output: `count` files whose sizes add up to about `total` bytes; 3 in 4 bytes are
/// pseudo-random (as compiled code and compressed assets compress little), the rest text.
fn output_files(total: usize, count: usize) -> Vec<(String, Vec<u8>)> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut files = Vec::with_capacity(count);
    for index in 0..count {
        // Sizes from a few hundred bytes to a few MiB, adding up to `total`.
        let weight = 1 + (next() % 64) as usize * (next() % 64) as usize;
        let size = (total / count) * weight / (63 * 63 / 4 + 1);
        let mut data = Vec::with_capacity(size + 8);
        while data.len() < size {
            if next() % 4 == 0 {
                data.extend_from_slice(b"fn main() { println!(\"hello, world\"); } // ");
            } else {
                data.extend_from_slice(&next().to_le_bytes());
            }
        }
        data.truncate(size);
        files.push((format!("lib/part{}/file{index:05}.bin", index % 17), data));
    }
    files
}

fn pack(files: &[(String, Vec<u8>)], mut hashed: Option<&mut ArchiveFiles>) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        match hashed.as_deref_mut() {
            Some(listed) => {
                let mut hashing = FileHasher::new(&data[..]);
                builder.append_data(&mut header, path, &mut hashing).unwrap();
                listed.insert(path, hashing.finish()).unwrap();
            }
            None => builder.append_data(&mut header, path, &data[..]).unwrap(),
        }
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn best_of<T>(runs: usize, mut work: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let began = Instant::now();
        let out = work();
        best = best.min(began.elapsed());
        last = Some(out);
    }
    (best, last.unwrap())
}

fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

#[test]
#[ignore = "a measurement: run with --release -- --ignored --nocapture"]
fn sbom_of_a_100_mib_component() {
    let files = output_files(128 << 20, 2000);
    let contents: usize = files.iter().map(|(_, data)| data.len()).sum();

    let (packing, archive) = best_of(3, || pack(&files, None));
    let (packing_hashed, (hashed_archive, listed)) = best_of(3, || {
        let mut listed = ArchiveFiles::new();
        (pack(&files, Some(&mut listed)), listed)
    });
    assert_eq!(hashed_archive, archive);
    let (hashing_only, _) = best_of(3, || {
        let mut listed = ArchiveFiles::new();
        for (path, data) in &files {
            let mut hasher = FileHasher::new(std::io::sink());
            hasher.write_all(data).unwrap();
            listed.insert(path, hasher.finish()).unwrap();
        }
        listed
    });
    let (reading, read) = best_of(3, || ArchiveFiles::from_tar_gz(&archive[..]).unwrap());
    assert_eq!(read.files, listed);

    let key = SigningKey::generate();
    let (documents, (sbom, envelope)) = best_of(3, || {
        let document = ComponentSbom {
            component: "big".into(),
            version: "1.0.0".into(),
            architecture: "amd64".into(),
            archive_name: "big-1.0.0-amd64.tar.gz".into(),
            archive_digest: read.archive_sha256.clone(),
            source: Some(GitSource { url: "https://example.com/o/big.git".into(), commit: "c".repeat(40) }),
            dependencies: Vec::new(),
            builder_image: None,
            info: DocumentInfo {
                namespace: "http://127.0.0.1:8080/api/v1/builds/b/sbom".into(),
                created: time::OffsetDateTime::now_utc(),
                tool: "artifacts-provenance-bench".into(),
            },
        }
        .document(&listed)
        .unwrap();
        let sbom = document.to_json();
        let statement = Statement::provenance(BuildFacts {
            subject_name: "big-1.0.0-amd64.tar.gz".into(),
            subject_digest: read.archive_sha256.clone(),
            build_type: statement::BUILD_TYPE_COMPONENT.into(),
            request: serde_json::json!({"component": "big"}),
            resolved_dependencies: vec![ResourceDescriptor::git_source(
                "https://example.com/o/big.git",
                &"c".repeat(40),
            )],
            builder_id: statement::DEFAULT_BUILDER_ID.into(),
            invocation_id: "b".into(),
            started_on: time::OffsetDateTime::now_utc(),
            finished_on: time::OffsetDateTime::now_utc(),
        })
        .unwrap();
        (sbom, Envelope::sign_statement(&key, &statement).to_json())
    });
    let (checking, check) =
        best_of(3, || spdx::check_archive(&spdx::Document::from_json(&sbom).unwrap(), &archive[..]).unwrap());
    assert!(check.is_ok());

    let inline = packing_hashed.saturating_sub(packing);
    println!(
        "component: {} files, {:.1} MiB of contents, {:.1} MiB archive",
        files.len(),
        contents as f64 / 1048576.0,
        archive.len() as f64 / 1048576.0
    );
    println!("packing (tar + gzip -6):                    {}", ms(packing));
    println!(
        "packing while hashing the files:            {} (+{}, {:.1}%)",
        ms(packing_hashed),
        ms(inline),
        100.0 * inline.as_secs_f64() / packing.as_secs_f64()
    );
    println!("hashing the files alone (SHA1 + SHA256):    {}", ms(hashing_only));
    println!(
        "reading the archive again for its files:    {} ({:.1}% of packing)",
        ms(reading),
        100.0 * reading.as_secs_f64() / packing.as_secs_f64()
    );
    println!(
        "SPDX document + statement + signed envelope: {} (SBOM {} KiB, envelope {} bytes)",
        ms(documents),
        sbom.len() / 1024,
        envelope.len()
    );
    println!("checking the archive against its SBOM:      {}", ms(checking));
    println!(
        "provenance + SBOM in the build (hashing while packing + documents): {} = {:.1}% of packing alone",
        ms(hashing_only + documents),
        100.0 * (hashing_only + documents).as_secs_f64() / packing.as_secs_f64()
    );
}
