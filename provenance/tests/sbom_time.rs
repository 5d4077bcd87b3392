//! What provenance and the SBOM cost a 100 MiB component build, against the part of the build they sit
//! beside: packing the output (tar, gzip at the default level, as `build-component`'s output.rs does).
//! A measurement, not a check of this machine's speed, so it is ignored by default:
//!
//! ```sh
//! cargo test -p artifacts-provenance --release --test sbom_time -- --ignored --nocapture
//! ```
//!
//! It prints the CPU times (of the thread doing the work, best of three runs) of: packing; packing while
//! hashing the files inline ([`FileHasher`]) and while handing them to a thread of their own
//! ([`BackgroundHasher`], what the build should use: the packing thread only copies the bytes); the hashing
//! alone; reading the archive again to list its files (what `artifacts verify` does, and what a build would
//! pay if it hashed after the fact); making the SPDX document, the statement and the signed envelope.

use std::io::Write as _;

use sha2::Digest as _;
use std::time::Duration;

use artifacts_provenance::dsse::Envelope;
use artifacts_provenance::key::SigningKey;
use artifacts_provenance::spdx::{
    self, ArchiveFiles, BackgroundHasher, ComponentSbom, DocumentInfo, FileHasher, GitSource,
};
use artifacts_provenance::statement::{self, BuildFacts, ResourceDescriptor, Statement};

/// A component's output: `count` files whose sizes add up to about `total` bytes; 3 in 4 bytes are
/// pseudo-random (as compiled code and compressed assets compress little), the rest text: its .tar.gz is
/// about 100 MiB for `total` 128 MiB.
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
            if next() % 16 == 0 {
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

/// The CPU time this thread has used: steadier than the wall clock on a machine that is busy with other
/// work, and what the work costs a build that shares its cores.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The least CPU time of `runs` runs of `work`, and what the last returned.
fn best_of<T>(runs: usize, mut work: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let began = thread_cpu_time();
        let out = work();
        best = best.min(thread_cpu_time() - began);
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
    let (packing_background, background_archive) = best_of(3, || {
        let background = BackgroundHasher::spawn();
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
        for (path, data) in &files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            builder.append_data(&mut header, path, background.file(path, &data[..])).unwrap();
        }
        let archive = builder.into_inner().unwrap().finish().unwrap();
        assert_eq!(background.finish().unwrap(), listed);
        archive
    });
    assert_eq!(background_archive, archive);
    let (hashing_only, _) = best_of(3, || {
        let mut listed = ArchiveFiles::new();
        for (path, data) in &files {
            let mut hasher = FileHasher::new(std::io::sink());
            hasher.write_all(data).unwrap();
            listed.insert(path, hasher.finish()).unwrap();
        }
        listed
    });
    let (sha256_only, _) =
        best_of(3, || files.iter().map(|(_, data)| sha2::Sha256::digest(data)[0]).fold(0u8, |a, b| a ^ b));
    let (sha1_only, _) =
        best_of(3, || files.iter().map(|(_, data)| sha1::Sha1::digest(data)[0]).fold(0u8, |a, b| a ^ b));
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
    let handing = packing_background.saturating_sub(packing);
    println!(
        "packing, hashing on another thread:         {} (+{}, {:.1}%, on the packing thread)",
        ms(packing_background),
        ms(handing),
        100.0 * handing.as_secs_f64() / packing.as_secs_f64()
    );
    println!("hashing the files alone (SHA1 + SHA256):    {}", ms(hashing_only));
    println!("  of which SHA256 {}, SHA1 {}", ms(sha256_only), ms(sha1_only));
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
        "provenance + SBOM in the build: {} of CPU ({:.1}% of packing's), of which {} on the packing thread \
         ({:.1}%) when hashing on another thread",
        ms(hashing_only + documents),
        100.0 * (hashing_only + documents).as_secs_f64() / packing.as_secs_f64(),
        ms(handing + documents),
        100.0 * (handing + documents).as_secs_f64() / packing.as_secs_f64()
    );
}
