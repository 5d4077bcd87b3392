//! The archive checks against an independent oracle: Python's `tarfile` with its `data` filter, which
//! resolves every link on disk as it extracts. Random small archives, dense in symlinks that climb with
//! `..` through one another. For every archive the checks accept, the filter must refuse no member and no
//! link extracted may resolve outside the destination.

use std::fmt::Write as _;
use std::process::Command;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use artifacts_runtime::archive::{for_each_entry, ArchiveError, Limits};
use artifacts_tests::require_program;

const ARCHIVES: usize = 1000;
const LIMITS: Limits = Limits { max_bytes: 1 << 20, max_entries: 100 };

#[derive(Debug, Clone)]
enum Entry {
    Directory(String),
    File(String),
    Symlink(String, String),
}

/// A tiny alphabet and shallow paths, so that entries land on one another and links chain.
fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&["a", "b", "c"][..]), 1..=3).prop_map(|parts| parts.join("/"))
}

fn target() -> impl Strategy<Value = String> {
    let part = prop_oneof![3 => prop::sample::select(&["a", "b", "c"][..]), 2 => Just(".."), 1 => Just(".")];
    prop_oneof![
        12 => prop::collection::vec(part, 1..=4).prop_map(|parts| parts.join("/")),
        1 => prop::sample::select(&["/", "/etc", "/tmp/a"][..]).prop_map(str::to_owned),
    ]
}

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    let entry = prop_oneof![
        1 => path().prop_map(Entry::Directory),
        2 => path().prop_map(Entry::File),
        4 => (path(), target()).prop_map(|(path, target)| Entry::Symlink(path, target)),
    ];
    prop::collection::vec(entry, 1..=6)
}

fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o755);
        match entry {
            Entry::Directory(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                builder.append_data(&mut header, format!("{path}/"), std::io::empty()).unwrap();
            }
            Entry::File(path) => {
                header.set_entry_type(tar::EntryType::Regular);
                builder.append_data(&mut header, path, std::io::empty()).unwrap();
            }
            Entry::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

fn accepted(bytes: &[u8]) -> bool {
    match for_each_entry(bytes, LIMITS, 0, |_, _| Ok(())) {
        Ok(_) => true,
        Err(ArchiveError::Refused(_)) => false,
        Err(other) => panic!("a small archive should be read or refused: {other}"),
    }
}

/// The component output that `tar -xzf` turned into `passwd -> /etc/passwd`.
fn reproduced_chain() -> Vec<Entry> {
    let link = |path: &str, target: &str| Entry::Symlink(path.to_owned(), target.to_owned());
    vec![
        Entry::Directory("a".to_owned()),
        link("a/b", ".."),
        link("c", "a/b/.."),
        link("e", "c/.."),
        link("g", "e/.."),
        link("h", "g/.."),
        link("passwd", "h/etc/passwd"),
    ]
}

/// For each archive of the directory: extracts it into a fresh directory with the `data` filter, then
/// resolves every link left there. Prints `name<TAB>problems` for each archive with any, then `checked N`.
const ORACLE: &str = r#"
import os, sys
try:
    # Python 3.12's tarfile, for a Python whose own lacks the data filter (Debian 12's 3.11.2).
    from backports import tarfile
except ImportError:
    import tarfile
if not hasattr(tarfile, "data_filter"):
    sys.exit(f"Python {sys.version.split()[0]}'s tarfile has no data filter: "
             "install backports.tarfile (scripts/test does), or use Python 3.12, 3.11.4+, 3.10.12+")
archives, scratch = sys.argv[1], sys.argv[2]
names = sorted(os.listdir(archives))
for name in names:
    dest = os.path.realpath(os.path.join(scratch, name))
    os.mkdir(dest)
    problems = []
    with tarfile.open(os.path.join(archives, name)) as archive:
        # One member at a time, so that one the extractor cannot lay out does not hide those after it.
        for member in archive.getmembers():
            try:
                archive.extract(member, dest, filter="data")
            except tarfile.FilterError as error:
                problems.append(f"the data filter refuses it: {error}")
            except OSError:
                # A clash in the archive's layout (a file where an entry made a directory, a directory under
                # a file): the checks leave those to the extractor, and they lead nowhere outside.
                pass
            except Exception as error:
                # Such as a symlink tarfile could not create: it then copies the member the link names,
                # unfiltered.
                problems.append(f"extracting {member.name!r} fails: {error!r}")
    for directory, subdirectories, files in os.walk(dest):
        for entry in subdirectories + files:
            path = os.path.join(directory, entry)
            real = os.path.realpath(path)
            if os.path.islink(path) and os.path.commonpath([real, dest]) != dest:
                problems.append(f"{os.path.relpath(path, dest)!r} resolves to {real!r}")
    if problems:
        print(name, "; ".join(problems), sep="\t")
print("checked", len(names))
"#;

#[test]
fn accepted_archives_extract_inside() {
    let python = require_program("python3", "python3");
    let chain = reproduced_chain();
    assert!(!accepted(&tar(&chain)), "the reproduced chain of links was accepted");

    let mut runner = TestRunner::default();
    let strategy = entries();
    let generated: Vec<Vec<Entry>> = (0..ARCHIVES).map(|_| strategy.new_tree(&mut runner).unwrap().current()).collect();
    let work = tempfile::tempdir().unwrap();
    let (archives, scratch) = (work.path().join("archives"), work.path().join("scratch"));
    std::fs::create_dir(&archives).unwrap();
    std::fs::create_dir(&scratch).unwrap();
    // The control: the oracle must see through the chain, or it sees through nothing.
    std::fs::write(archives.join("chain.tar"), tar(&chain)).unwrap();
    let mut accepted_links = 0;
    for (index, entries) in generated.iter().enumerate() {
        let bytes = tar(entries);
        if accepted(&bytes) {
            std::fs::write(archives.join(format!("{index:04}.tar")), bytes).unwrap();
            accepted_links += entries.iter().filter(|entry| matches!(entry, Entry::Symlink(..))).count();
        }
    }
    let written = std::fs::read_dir(&archives).unwrap().count();

    let output = Command::new(python).args(["-c", ORACLE]).arg(&archives).arg(&scratch).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the oracle failed: {}{stdout}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.ends_with(&format!("checked {written}\n")), "the oracle did not check every archive: {stdout}");

    let mut disagreements = String::new();
    let mut control_refused = false;
    for line in stdout.lines().filter(|line| !line.starts_with("checked ")) {
        let (name, problems) = line.split_once('\t').unwrap();
        if name == "chain.tar" {
            control_refused = true;
            continue;
        }
        let index: usize = name.trim_end_matches(".tar").parse().unwrap();
        writeln!(disagreements, "accepted, but {problems}:\n  {:?}", generated[index]).unwrap();
    }
    assert!(control_refused, "the oracle let the reproduced chain through: it proves nothing");
    assert!(disagreements.is_empty(), "archives the checks accept and Python's tarfile does not:\n{disagreements}");
    // Enough accepted archives with links that the agreement means something.
    assert!(written > ARCHIVES / 5 && accepted_links > ARCHIVES / 5, "{written} archives, {accepted_links} links");
}
