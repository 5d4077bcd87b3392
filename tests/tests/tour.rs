//! Issues 14 and 29: the README's tour, run from top to bottom as a person would, in order, on a stack
//! started by the README's own start command (`scripts/up --dev`, which runs `artifacts up --dev`); then
//! `examples/tour.sh` twice in a row on that same stack, which is no longer fresh; then Ctrl-C and a second
//! start, which keeps what the tour built. The tour's commands are read from README.md itself (and the curl
//! examples of docs/http-api.md, which follow it in the same shell), so the pages and the test cannot drift;
//! every link of the README and docs/ names a file; and the examples fail with one plain line, not pages of
//! tracebacks, when the stack is down.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use artifacts_tests::{free_port, repo_root, require_docker, require_program, workspace_binary};

/// The README's tour section: the heading that starts it.
const TOUR_HEADING: &str = "## A five-minute tour";

/// The addresses the README writes (the defaults), and the tour's directory. The test's stack listens on
/// free ports instead, so that it runs beside any other stack, and its tour works in a directory of its own:
/// these are the only changes made to the README's commands before they run.
const README_GATEWAY: &str = "127.0.0.1:8080";
const README_REGISTRY: &str = "127.0.0.1:5000";
const README_TOUR_DIR: &str = "/tmp/artifacts-tour";

/// The tour's ```sh blocks, in the README's order.
fn readme_tour_blocks() -> Vec<String> {
    sh_blocks("README.md", TOUR_HEADING)
}

/// The curl examples of docs/http-api.md, written to run after the README's tour, in its shell.
const HTTP_API_PAGE: &str = "docs/http-api.md";
const HTTP_API_EXAMPLES: &str = "## With curl";

/// The ```sh blocks of the section of `page` (a path in the repository) that starts with `heading`, up to
/// the next heading of that level, in order.
fn sh_blocks(page: &str, heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join(page)).unwrap_or_else(|err| panic!("{page}: {err}"));
    let start = text.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("{page} has no {heading:?}")) + 1;
    let section = &text[start + heading.len()..];
    let level = heading.split(' ').next().expect("a heading");
    let section = &section[..section.find(&format!("\n{level} ")).unwrap_or(section.len())];
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().expect("a block")),
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "a ```sh block of {page}'s {heading:?} is not closed");
    blocks
}

#[test]
fn the_readme_tour_starts_the_stack_with_the_readme_start_command() {
    let blocks = readme_tour_blocks();
    assert!(blocks.len() >= 3, "the tour has a start and steps: {blocks:?}");
    // Its first block is the start command of "Two commands", with --dev, which the test runs as
    // scripts/up does: `artifacts up` with the same arguments.
    assert_eq!(blocks[0].trim(), "scripts/up --dev", "the tour starts the stack as the README's first command does");
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let two_commands = &readme[readme.find("## Two commands").expect("the README's two commands")..];
    assert!(two_commands.contains("\nscripts/up --dev "), "the README's start command is scripts/up --dev");
    let script = std::fs::read_to_string(repo_root().join("scripts/up")).unwrap();
    assert!(
        script.contains("exec \"$bin_dir/artifacts\" up \"$@\""),
        "scripts/up runs artifacts up with its arguments"
    );
    // Every address the steps use is one the test can move to its own stack's.
    let steps = blocks[1..].concat() + &sh_blocks(HTTP_API_PAGE, HTTP_API_EXAMPLES).concat();
    for (at, _) in steps.match_indices("127.0.0.1:") {
        let address = steps.get(at..at + 14).unwrap_or(&steps[at..]);
        assert!(
            address == README_GATEWAY || address == README_REGISTRY,
            "the tour uses {address}, which the test does not know: {steps}"
        );
    }
}

/// A directory laid out as the README's reader has it after `scripts/up`: `examples/` and the binaries
/// in `target/release/` (here those of the workspace's build). `artifacts up` started in it keeps its data
/// in `./.artifacts`, as the README's tour expects.
fn a_clone() -> tempfile::TempDir {
    let clone = tempfile::tempdir().expect("a temporary directory");
    std::os::unix::fs::symlink(repo_root().join("examples"), clone.path().join("examples")).unwrap();
    std::fs::create_dir(clone.path().join("target")).unwrap();
    let binaries = workspace_binary("artifacts").parent().expect("a directory").to_path_buf();
    std::os::unix::fs::symlink(binaries, clone.path().join("target/release")).unwrap();
    clone
}

struct Started {
    up: Child,
    gateway: String,
    registry: String,
    nats: String,
}

/// `scripts/up --dev`'s last step, `artifacts up --dev`, in the clone (so its data directory is the fresh
/// `.artifacts` there), on free ports, with none of the settings a developer's shell may hold; returns
/// once it says the stack is up.
async fn start_as_the_readme_says(clone: &Path) -> Started {
    let (gateway, nats, registry) = (free_port(), free_port(), free_port());
    let mut up = Command::new(clone.join("target/release/artifacts"))
        .args(["up", "--dev"])
        .current_dir(clone)
        .env("ARTIFACTS__GATEWAY__LISTEN", format!("127.0.0.1:{gateway}"))
        .env("NATS_URL", format!("nats://127.0.0.1:{nats}"))
        .env("ARTIFACTS__REGISTRY__ADDRESS", format!("127.0.0.1:{registry}"))
        .env_remove("ARTIFACTS_ADMIN_KEY")
        .env_remove("ARTIFACTS_CONFIG")
        .env_remove("ARTIFACTS__GIT__ALLOWED_SCHEMES")
        .env_remove("ARTIFACTS__GIT__FILE_ROOTS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("artifacts up starts");
    // What up shows on its standard error (its warnings, the processes' errors), with the test's output.
    let mut errors = BufReader::new(up.stderr.take().expect("piped")).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = errors.next_line().await {
            eprintln!("up: {line}");
        }
    });
    let mut lines = BufReader::new(up.stdout.take().expect("piped")).lines();
    let mut said = Vec::new();
    let started = tokio::time::timeout(Duration::from_secs(90), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let done = line.starts_with("Press Ctrl-C");
            said.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(started, Ok(true)), "artifacts up --dev did not come up in 90 s:\n{}", said.join("\n"));
    let banner = said.join("\n");
    assert!(banner.contains("dev mode:  components may be built from file:// repositories under"), "{banner}");
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("up: {line}");
        }
    });
    Started {
        up,
        gateway: format!("127.0.0.1:{gateway}"),
        registry: format!("127.0.0.1:{registry}"),
        nats: format!("nats://127.0.0.1:{nats}"),
    }
}

/// The environment of a person's second terminal: a home of its own (so `artifacts login` and `docker
/// login` write there, not into the account running the tests), the test's PATH (which has the Python
/// with nats-py that scripts/test installs), and none of the settings the test's shell may hold.
fn a_person(command: &mut Command, home: &Path, started: &Started) {
    command
        .env("HOME", home)
        .env("NATS_URL", &started.nats)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DOCKER_CONFIG")
        .env_remove("ARTIFACTS_URL")
        .env_remove("ARTIFACTS_KEY")
        .env_remove("ARTIFACTS_ADMIN_KEY")
        .env_remove("ARTIFACTS_CONFIG")
        .stdin(Stdio::null());
}

/// The last lines of every process's log, for a failure's message.
fn log_tails(clone: &Path) -> String {
    let mut tails = String::new();
    let Ok(entries) = std::fs::read_dir(clone.join(".artifacts/logs")) else { return tails };
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        tails.push_str(&format!(
            "--- {}\n{}\n",
            entry.path().display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        ));
    }
    tails
}

fn require_nats_py() {
    let output = std::process::Command::new("python3").args(["-c", "import nats"]).output().expect("python3 runs");
    assert!(
        output.status.success(),
        "python3 has no nats-py: run the suite with scripts/test, which installs it into target/python \
         (PATH=$PWD/target/python/bin:$PATH)"
    );
}

#[tokio::test]
async fn the_readme_tour_runs_top_to_bottom_then_the_tour_script_twice() {
    require_docker().await;
    require_program("git", "git");
    require_program("python3", "python3");
    require_nats_py();
    let began = Instant::now();
    let clone = a_clone();
    let started = start_as_the_readme_says(clone.path()).await;
    let up_at = began.elapsed();

    // The README's steps in order, in one shell, stopping at the first command that fails.
    let blocks = readme_tour_blocks();
    let tour_dir = tempfile::tempdir().expect("a temporary directory");
    let tour_path = tour_dir.path().join("artifacts-tour");
    // No pipefail: a person's shell has none, and `curl ... | head -c 200` is fine there.
    let mut script = String::from("set -eux\n");
    // Then, in the same shell, the curl examples of docs/http-api.md, which use the tour's variables.
    let examples = sh_blocks(HTTP_API_PAGE, HTTP_API_EXAMPLES);
    assert!(examples.len() >= 5, "{HTTP_API_PAGE} has its curl examples: {examples:?}");
    let marker = "echo '== the curl examples of docs/http-api.md'\n".to_owned();
    for block in blocks[1..].iter().chain(std::iter::once(&marker)).chain(&examples) {
        script.push_str(
            &block
                .replace(README_GATEWAY, &started.gateway)
                .replace(README_REGISTRY, &started.registry)
                .replace(README_TOUR_DIR, tour_path.to_str().unwrap()),
        );
    }
    let home = tempfile::tempdir().expect("a temporary directory");
    let mut tour = Command::new("bash");
    tour.args(["-c", &script]).current_dir(clone.path());
    a_person(&mut tour, home.path(), &started);
    let output = tokio::time::timeout(Duration::from_secs(240), tour.output())
        .await
        .expect("the README's tour ends within 4 minutes")
        .expect("bash runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the README's tour stopped at a step (the last `+` line):\n{stdout}\n{stderr}\n{}",
        log_tails(clone.path())
    );
    let readme_at = began.elapsed();
    let (tour_output, examples_output) =
        stdout.split_once("== the curl examples of docs/http-api.md").expect("the examples ran after the tour");
    assert!(examples_output.contains("hi, built"), "docs/http-api.md's image ran: {examples_output}");
    assert!(examples_output.contains("bin/hello"), "docs/http-api.md's archive lists its files: {examples_output}");
    let stdout = tour_output;
    // What the README's comments say the steps print.
    for says in [
        "logged in to",
        "hi, built",
        "hello from the build context",
        "hello from a component built by artifact storage",
        "build succeeded",
        "\"status\":\"found\"",
        "\"status\":\"not_found\"",
        "no image has been built for component nothing on branch main for linux/amd64",
        "\"status\":\"invalid\"",
        "bin/hello",
        "\"status\": \"downloaded\"",
        "would remove",
    ] {
        assert!(stdout.contains(says), "the README's tour did not print {says:?}:\n{stdout}\n{stderr}");
    }
    assert!(!stdout.contains('\u{1b}'), "no terminal codes reach a pipe: {stdout}");

    // examples/tour.sh, twice in a row, on the stack the README's tour has used.
    let admin_key = std::fs::read_to_string(clone.path().join(".artifacts/admin-key")).expect("up saved the key");
    for run in 1..=2 {
        let workdir = tempfile::tempdir().expect("a temporary directory");
        let mut script = Command::new("bash");
        script
            .arg(repo_root().join("examples/tour.sh"))
            // From another directory than the repository's, as a reader may run it.
            .current_dir(workdir.path());
        a_person(&mut script, home.path(), &started);
        script
            .env("ARTIFACTS_URL", format!("http://{}", started.gateway))
            .env("ARTIFACTS_KEY", admin_key.trim())
            .env("TOUR_DIR", tour_dir.path())
            // The client beside the stack's binaries, as `scripts/up` leaves it.
            .env("PATH", client_path());
        let output = tokio::time::timeout(Duration::from_secs(240), script.output())
            .await
            .expect("examples/tour.sh ends within 4 minutes")
            .expect("bash runs");
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(
            output.status.success(),
            "examples/tour.sh, run {run}, stopped:\n{stdout}\n{stderr}\n{}",
            log_tails(clone.path())
        );
        assert!(stdout.contains("tour: every step answered as the README says"), "run {run}: {stdout}");
        assert!(stdout.contains("hi, built"), "run {run}: the image ran: {stdout}");
        assert!(stdout.lines().any(|line| line == "build succeeded"), "run {run}: the text log ends with the status");
        assert!(
            stdout.contains("nats: found, downloaded, 404 and 403 as the README says"),
            "run {run}: examples/nats_request.py found what the tour built and exited 1 on a 404 and a 403:\n{stdout}"
        );
    }
    let scripts_at = began.elapsed();

    // Ctrl-C, as the README says, stops it cleanly; started again the same way, it has kept what the tour
    // built.
    stop(started.up).await;
    let again = start_as_the_readme_says(clone.path()).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("a client");
    for query in [
        "images?component=hello&branch=main&architecture=amd64",
        "components?component=hello-component&tag=v1.0.0&architecture=amd64",
    ] {
        let answer = http
            .get(format!("http://{}/api/v1/{query}", again.gateway))
            .bearer_auth(admin_key.trim())
            .send()
            .await
            .expect("the gateway answers");
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        assert_eq!(status, 200, "after a restart, {query}: {body}");
    }
    stop(again.up).await;
    println!(
        "stack up after {:.1} s; the README's tour done after {:.1} s; examples/tour.sh twice after {:.1} s; \
         stopped, started again and checked after {:.1} s",
        up_at.as_secs_f64(),
        readme_at.as_secs_f64(),
        scripts_at.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
}

/// Ctrl-C to `artifacts up`, which stops the whole stack and exits 0.
async fn stop(mut up: Child) {
    // SAFETY: signalling the child this test spawned.
    unsafe { libc::kill(up.id().expect("up runs") as i32, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait()).await.expect("up stops within 30 s").unwrap();
    assert!(status.success(), "{status}");
}

/// `PATH` with the directory of the workspace's `artifacts` binary first.
fn client_path() -> std::ffi::OsString {
    let dir: PathBuf = workspace_binary("artifacts").parent().expect("a directory").to_path_buf();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&rest))).expect("a PATH")
}

#[tokio::test]
async fn the_nats_example_says_in_one_line_that_nothing_answers() {
    let python = require_program("python3", "python3");
    let down = format!("nats://127.0.0.1:{}", free_port());
    let run = Command::new(python)
        .arg(repo_root().join("examples/nats_request.py"))
        .args(["--server", &down, "artifacts.image.get", "{}"])
        .env("ARTIFACTS_KEY", "ak_0123456789abcdef_secret")
        .current_dir(std::env::temp_dir())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run).await.expect("it gives up").expect("python runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No module named 'nats'") {
        panic!("nats-py is missing: run the suite with scripts/test, which installs it into target/python");
    }
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line, no traceback: {stderr}");
    assert!(stderr.contains("cannot connect to NATS"), "{stderr}");
}

/// Every relative link of the README and of the `docs/` pages names a file of the repository (anchors
/// aside), and the README links every page of `docs/`, so that no reference page is out of reach.
#[test]
fn the_readme_and_docs_link_only_to_files_that_exist_and_every_docs_page() {
    let root = repo_root();
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    pages.extend(docs.iter().cloned());
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            if !page.parent().unwrap().join(path).exists() {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "links to files that do not exist:\n{}", broken.join("\n"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for page in &docs {
        let name = format!("](docs/{})", page.file_name().unwrap().to_string_lossy());
        assert!(readme.contains(&name), "the README does not link {}", page.display());
    }
}
