//! `artifacts up` brings up the whole stack as real processes, answers through it, and stops it all on
//! Ctrl-C. Needs `nats-server` and `docker-registry` (scripts/test installs them) and the workspace's
//! binaries built (`cargo build --workspace --bins`, which scripts/test runs).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The processes whose parent is `pid`, with their command names (from /proc).
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // `pid (comm) state ppid ...`: the name may hold spaces, so read after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let parent = stat[close + 1..].split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            found.push((child, stat[open + 1..close].to_owned()));
        }
    }
    found
}

#[tokio::test]
async fn up_starts_everything_and_ctrl_c_stops_everything() {
    let bin = Path::new(env!("CARGO_BIN_EXE_artifacts"));
    for sibling in ["artifacts-gateway", "artifacts-lookup"] {
        assert!(
            bin.with_file_name(sibling).exists(),
            "{sibling} is not built beside {}: run `cargo build --workspace --bins` (scripts/test does)",
            bin.display()
        );
    }
    let data = tempfile::tempdir().unwrap();
    let (gateway, nats, registry) = (free_port(), free_port(), free_port());
    let mut up = up_command(bin, &["up", "--data-dir"], data.path(), (gateway, nats, registry))
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let mut admin_key = None;
    let mut output = Vec::new();
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.trim().strip_prefix("admin key: ") {
                admin_key = rest.split_whitespace().next().map(str::to_owned);
            }
            let done = line.starts_with("Press Ctrl-C");
            output.push(line);
            if done {
                return;
            }
        }
    })
    .await;
    assert!(started.is_ok(), "up did not come up in 60s:\n{}", output.join("\n"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let text = output.join("\n");
    assert!(text.contains(&format!("gateway:   http://127.0.0.1:{gateway}/api/v1")), "{text}");
    assert!(text.contains(&format!("docs:      http://127.0.0.1:{gateway}/docs")), "{text}");
    // Issue 29: the registry says it is plain HTTP and where remote clients learn what they need; NATS
    // gets the JetStream storage up wrote into its configuration, which the disk holds.
    assert!(text.contains(&format!("registry:  127.0.0.1:{registry}, plain HTTP")), "{text}");
    assert!(text.contains("docs/registry.md"), "{text}");
    let config = std::fs::read_to_string(data.path().join("nats-server.conf")).unwrap();
    let promised: u64 = config
        .lines()
        .find_map(|line| line.trim().strip_prefix("max_file_store: "))
        .and_then(|bytes| bytes.parse().ok())
        .unwrap_or_else(|| panic!("up writes max_file_store: {config}"));
    let free = std::process::Command::new("df").args(["--output=avail", "-B1"]).arg(data.path()).output().unwrap();
    let free: u64 = String::from_utf8_lossy(&free.stdout).lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(promised <= free, "max_file_store {promised} is more than the {free} bytes free");
    assert!(text.contains("storage:   "), "{text}");
    let admin_key = admin_key.expect("the generated admin key is printed");
    let saved = std::fs::read_to_string(data.path().join("admin-key")).unwrap();
    assert_eq!(saved.trim(), admin_key);

    let http = reqwest::Client::new();
    let lookup = http
        .get(format!("http://127.0.0.1:{gateway}/api/v1/images?component=libfoo&branch=main&architecture=amd64"))
        .bearer_auth(&admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(lookup.status(), 404);
    let body: Value = lookup.json().await.unwrap();
    assert_eq!(body["status"], "not_found");
    // Without --dev, file:// repositories are refused.
    let refused = http
        .post(format!("http://127.0.0.1:{gateway}/api/v1/components"))
        .bearer_auth(&admin_key)
        .json(&serde_json::json!({"url": format!("file://{}", data.path().display()), "component": "local",
            "tag": "v1.0.0", "architecture": "amd64"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    // The registry answers only with a token from the gateway.
    let registry_answer = http.get(format!("http://127.0.0.1:{registry}/v2/")).send().await.unwrap();
    assert_eq!(registry_answer.status(), 401);
    let challenge = registry_answer.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.contains(&format!("realm=\"http://127.0.0.1:{gateway}/api/v1/registry/token\"")), "{challenge}");

    // Issue 9's attacks, replayed on the stack `up` runs. A connection without credentials listens to
    // every inbox it may, asks a service with a stolen admin key in a header, and a read key asks a lookup
    // to build another repository.
    let bearer = |key: &str| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Authorization", format!("Bearer {key}").as_str());
        headers
    };
    let lookup = r#"{"component":"libfoo","branch":"main","architecture":"amd64"}"#;
    let anonymous = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(format!("127.0.0.1:{nats}"))
        .await
        .unwrap();
    let mut listening = Vec::new();
    for subject in ["_INBOX.>", "_INBOX_service.>", "_INBOX_admin.>", ">"] {
        listening.push(anonymous.subscribe(subject).await.unwrap());
    }
    let asked = anonymous.request_with_headers("artifacts.image.get", bearer(&admin_key), lookup.into()).await;
    assert!(asked.is_err(), "a connection without credentials may not ask the services");
    let admin = async_nats::ConnectOptions::with_user_and_password("admin".into(), admin_key.clone())
        .custom_inbox_prefix("_INBOX_admin")
        .connect(format!("127.0.0.1:{nats}"))
        .await
        .expect("the admin key is the `admin` NATS user");
    let reader: Value = http
        .post(format!("http://127.0.0.1:{gateway}/api/v1/keys"))
        .bearer_auth(&admin_key)
        .json(&serde_json::json!({"name": "reader", "scopes": ["read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reader = reader["secret"].as_str().unwrap().to_owned();
    let mut read_key_builds = 0;
    for _ in 0..10 {
        let answer = asked_across_reloads(&admin, bearer(&admin_key), lookup).await;
        assert!(String::from_utf8_lossy(&answer.payload).contains("not_found"));
        let url = "https://example.com/evil.git";
        let attempt = http
            .get(format!(
                "http://127.0.0.1:{gateway}/api/v1/components?component=victim&tag=v2&architecture=amd64&url={url}"
            ))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap();
        read_key_builds += usize::from(attempt.status() != 404);
        http.get(format!("http://127.0.0.1:{gateway}/api/v1/keys")).bearer_auth(&admin_key).send().await.unwrap();
    }
    let mut overheard = 0;
    for mut subscription in listening {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), subscription.next()).await {
            overheard += 1;
        }
    }
    println!("anonymous NATS: {overheard} messages overheard during 40 requests; read-key lookups that built: {read_key_builds} of 10");
    assert_eq!(overheard, 0);
    assert_eq!(read_key_builds, 0);
    drop((anonymous, admin));

    // A NATS client without credentials may still discover the services.
    let client = async_nats::connect(format!("127.0.0.1:{nats}")).await.unwrap();
    // Functions register as they finish starting: ask until every one has answered (at most 20 s).
    let mut names = std::collections::BTreeSet::new();
    let expected = ["artifacts-lookup", "artifacts-build-image", "artifacts-build-component"];
    for _ in 0..20 {
        let inbox = client.new_inbox();
        let mut pongs = client.subscribe(inbox.clone()).await.unwrap();
        client.publish_with_reply("$SRV.PING", inbox, "".into()).await.unwrap();
        while let Ok(Some(pong)) = tokio::time::timeout(Duration::from_millis(500), pongs.next()).await {
            let pong: Value = serde_json::from_slice(&pong.payload).unwrap();
            names.insert(pong["name"].as_str().unwrap().to_owned());
        }
        if expected.iter().all(|service| names.contains(*service)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for service in expected {
        assert!(names.contains(service), "{service} does not answer $SRV.PING: {names:?}");
    }

    // A function killed with SIGKILL is started again, and the stack stays up.
    let up_pid = up.id().unwrap();
    let (lookup_pid, _) = children(up_pid).into_iter().find(|(_, name)| name.starts_with("artifacts-looku")).unwrap();
    let killed = std::time::Instant::now();
    // SAFETY: signalling a process this test's child started.
    unsafe { libc::kill(lookup_pid as i32, libc::SIGKILL) };
    let recovered = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let again = children(up_pid)
                .into_iter()
                .any(|(pid, name)| name.starts_with("artifacts-looku") && pid != lookup_pid);
            if again && client.request("$SRV.PING.artifacts-lookup", "".into()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(recovered.is_ok(), "the lookup function was not restarted");
    println!("a lookup function killed with SIGKILL answered again after {:?}", killed.elapsed());
    let lookup = http
        .get(format!("http://127.0.0.1:{gateway}/api/v1/images?component=libfoo&branch=main&architecture=amd64"))
        .bearer_auth(&admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(lookup.status(), 404, "the stack answers after the restart");
    drop(client);

    // SAFETY: signalling the child this test spawned.
    unsafe { libc::kill(up.id().unwrap() as i32, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait()).await.expect("up stops within 30s").unwrap();
    assert!(status.success(), "{status}");
    for port in [gateway, nats, registry] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still answers after up stopped"
        );
    }
}

/// Issue 29: before its banner `up` shows only its own lines (each process's log goes to
/// `<data dir>/logs/<process>.log`), and `--dev` lets components be built from `file://` repositories
/// under the temporary and data directories.
#[tokio::test]
async fn up_keeps_process_logs_in_files_and_dev_builds_file_repositories() {
    let bin = Path::new(env!("CARGO_BIN_EXE_artifacts"));
    let data = tempfile::tempdir().unwrap();
    let (gateway, nats, registry) = (free_port(), free_port(), free_port());
    let mut up = up_command(bin, &["up", "--dev", "--data-dir"], data.path(), (gateway, nats, registry))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Both streams, in the order they come, marked by which.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<(&str, String)>();
    let forward = |stream: &'static str, output: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        let lines_tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut output = BufReader::new(output).lines();
            while let Ok(Some(line)) = output.next_line().await {
                let _ = lines_tx.send((stream, line));
            }
        });
    };
    forward("stdout", Box::new(up.stdout.take().unwrap()));
    forward("stderr", Box::new(up.stderr.take().unwrap()));
    let mut before_banner = Vec::new();
    let mut banner = Vec::new();
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some((stream, line)) = lines.recv().await {
            if stream == "stdout" && line == "artifact storage is up" || !banner.is_empty() {
                let done = line.starts_with("Press Ctrl-C");
                banner.push(line);
                if done {
                    return;
                }
            } else {
                before_banner.push(format!("{stream}: {line}"));
            }
        }
    })
    .await;
    let shown = format!("before the banner:\n{}\nbanner:\n{}", before_banner.join("\n"), banner.join("\n"));
    assert!(started.is_ok(), "up did not come up in 60s:\n{shown}");
    tokio::spawn(async move { while lines.recv().await.is_some() {} });
    // Its own lines only: each starts with `artifacts up:` or is blank (processes' lines are `name | ...`).
    for line in &before_banner {
        let text = line.split_once(": ").unwrap().1;
        assert!(text.is_empty() || text.starts_with("artifacts up: "), "a line not of up's own: {line}\n{shown}");
    }
    let text = banner.join("\n");
    let logs = data.path().canonicalize().unwrap().join("logs");
    assert!(text.contains(&format!("logs:      {}/", logs.display())), "{text}");
    assert!(text.contains("dev mode:  components may be built from file:// repositories under"), "{text}");
    let admin_key = banner
        .iter()
        .find_map(|line| line.trim().strip_prefix("admin key: "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the generated admin key is printed")
        .to_owned();

    // Each process's log, in its file.
    for (process, says) in [
        ("nats", "Server is ready"),
        ("registry", "listening on"),
        ("gateway", "gateway listening"),
        ("lookup", "serving"),
        ("build-image", "serving"),
        ("build-component", "serving"),
        ("git-trigger", ""),
        ("gc", "serving"),
    ] {
        let file = logs.join(format!("{process}.log"));
        let log = std::fs::read_to_string(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        assert!(log.contains(&format!("==> artifacts up: {process} starting")), "{}:\n{log}", file.display());
        assert!(log.contains(says), "{} does not say {says:?}:\n{log}", file.display());
    }

    // A component from a file:// repository in the data directory is accepted.
    let repo = data.path().join("hello-component");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("build.sh"), "#!/bin/sh\necho hello > \"$ARTIFACT_OUT/hello.txt\"\n").unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "hello"],
        &["tag", "v1.0.0"],
    ] {
        let status = std::process::Command::new("git").arg("-C").arg(&repo).args(args).status().unwrap();
        assert!(status.success(), "git {args:?}");
    }
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{gateway}/api/v1/components"))
        .bearer_auth(&admin_key)
        .json(&serde_json::json!({
            "url": format!("file://{}", repo.display()),
            "component": "dev-hello",
            "tag": "v1.0.0",
            "architecture": "amd64",
        }))
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body = answer.text().await.unwrap();
    assert_eq!(status, 202, "{body}");

    // SAFETY: signalling the child this test spawned.
    unsafe { libc::kill(up.id().unwrap() as i32, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait()).await.expect("up stops within 30s").unwrap();
    assert!(status.success(), "{status}");
    let gateway_log = std::fs::read_to_string(logs.join("gateway.log")).unwrap();
    assert!(gateway_log.trim_end().ends_with("==> artifacts up: gateway stopped"), "{gateway_log}");
}

/// Issue 29: `scripts/up` runs the `artifacts` it built from cargo's target directory, which
/// `CARGO_TARGET_DIR` moves (it ran `target/release/artifacts` whatever that said).
#[test]
fn scripts_up_finds_what_cargo_built_where_cargo_target_dir_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target_dir = |value: &str| {
        let output = std::process::Command::new("bash")
            .args(["-c", ". scripts/lib.sh && target_dir"])
            .current_dir(root)
            .env("CARGO_TARGET_DIR", value)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(target_dir("/tmp/elsewhere-target"), "/tmp/elsewhere-target");
    assert_eq!(target_dir("relative-target"), root.join("relative-target").display().to_string());
    let script = std::fs::read_to_string(root.join("scripts/up")).unwrap();
    assert!(script.contains("bin_dir=\"$(target_dir)/release\""), "{script}");
    assert!(script.contains("exec \"$bin_dir/artifacts\" up"), "{script}");
    assert!(!script.contains("--workspace"), "scripts/up builds only what runs:\n{script}");
}

/// A lookup sent again while it reaches no one: the key just created reloads nats-server, whose client
/// account's imports are re-registered for about 15 ms (the request was never delivered).
async fn asked_across_reloads(
    client: &async_nats::Client,
    headers: async_nats::HeaderMap,
    payload: &str,
) -> async_nats::Message {
    for _ in 0..50 {
        match client.request_with_headers("artifacts.image.get", headers.clone(), payload.to_owned().into()).await {
            Err(err)
                if matches!(
                    err.kind(),
                    async_nats::RequestErrorKind::NoResponders | async_nats::RequestErrorKind::TimedOut
                ) =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            answer => return answer.expect("the lookup answers"),
        }
    }
    panic!("artifacts.image.get reached no one for a second");
}

/// `artifacts up` with `args` on `data`, every address on loopback at the given ports (gateway, NATS,
/// registry), and none of the settings a developer's shell may hold.
fn up_command(
    bin: &Path,
    args: &[&str],
    data: &Path,
    (gateway, nats, registry): (u16, u16, u16),
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(bin);
    command
        .args(args)
        .arg(data)
        .env("ARTIFACTS__GATEWAY__LISTEN", format!("127.0.0.1:{gateway}"))
        .env("NATS_URL", format!("nats://127.0.0.1:{nats}"))
        .env("ARTIFACTS__REGISTRY__ADDRESS", format!("127.0.0.1:{registry}"))
        .env_remove("ARTIFACTS_ADMIN_KEY")
        .env_remove("ARTIFACTS_CONFIG")
        .env_remove("ARTIFACTS__GIT__ALLOWED_SCHEMES")
        .env_remove("ARTIFACTS__GIT__FILE_ROOTS")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    command
}
