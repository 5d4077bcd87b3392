//! Issue 28: a build secret's value travels in no NATS message an admin key can read and in none of the
//! stack's own log lines, while image and component builds that use it (and print it, and fail after
//! printing it) run. The stack runs with NATS users as `artifacts up` runs it; the admin key's NATS user
//! subscribes to everything it may (`>` is refused to it; its own inbox is not) and asks the stack over
//! NATS what a client would ask; an operator's `service` connection subscribes to `>` beside it and shows
//! where the value travels inside the stack (only sealed). The stack's own tracing output, as its
//! processes would write it (JSON, the deployments' `info` and the project's crates at `debug`), is
//! captured for the whole test.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use artifacts_tests::{
    allow_local_repositories, connect_as_key, key_header, manifest, require_docker, GitRepo, Registry, TestApp,
    ADMIN_KEY, NATS_SERVICE_PASSWORD,
};

/// Everything the stack logs in this test process.
static LOGGED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOGGED.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber: JSON lines as `artifacts_runtime::telemetry` writes them, at `info`
/// for dependencies (a deployment's default) and `debug` for every crate of the stack.
fn capture_the_stacks_logs() {
    let filter = "info,artifacts_runtime=debug,artifacts_gateway=debug,artifacts_lookup=debug,artifacts_gc=debug,\
                  artifacts_build_image=debug,artifacts_build_component=debug,artifacts_git_trigger=debug";
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(|| Capture)
        .with_ansi(false)
        .json()
        .flatten_event(true)
        .try_init()
        .expect("the only subscriber of this test binary");
}

/// The forms a value could take in a message or a log line: as is, JSON-escaped, base64, hex.
fn forms(value: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    vec![value.as_bytes().to_vec(), engine.encode(value).into_bytes(), hex::encode(value).into_bytes()]
}

fn holds(haystack: &[u8], forms: &[Vec<u8>]) -> bool {
    forms.iter().any(|needle| haystack.windows(needle.len()).any(|window| window == needle.as_slice()))
}

/// Every message a subscription receives until the test takes them: (subject, headers and payload).
/// Messages a subscription received: subject and payload.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

fn collect(mut subscription: async_nats::Subscriber) -> Received {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            let mut bytes = format!("{:?}", message.headers).into_bytes();
            bytes.extend_from_slice(&message.payload);
            into.lock().unwrap().push((message.subject.to_string(), bytes));
        }
    });
    seen
}

/// A request as the admin key's NATS user, answered JSON.
async fn ask(client: &async_nats::Client, subject: &str, body: &Value) -> Value {
    let reply = client
        .request_with_headers(subject.to_owned(), key_header(ADMIN_KEY), body.to_string().into())
        .await
        .unwrap_or_else(|err| panic!("{subject}: {err}"));
    serde_json::from_slice(&reply.payload).unwrap_or_else(|_| panic!("{subject}: {reply:?}"))
}

/// Polls `artifacts.build.get` over NATS until the build ends.
async fn wait_over_nats(client: &async_nats::Client, build_id: &str) -> Value {
    for _ in 0..1200 {
        let record = ask(client, "artifacts.build.get", &json!({"buildId": build_id})).await;
        if matches!(record["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("build {build_id} did not end within two minutes");
}

#[tokio::test]
async fn a_secret_value_is_in_no_message_an_admin_key_reads_nor_in_the_stacks_logs() {
    capture_the_stacks_logs();
    require_docker().await;
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("secrets.key");
    let registry_address = registry.address.clone();
    let app = TestApp::spawn_with_nats_users(|settings| {
        allow_local_repositories(settings);
        settings.registry.address = registry_address;
        settings.secrets.key_file = Some(key_file);
    })
    .await;
    let run = std::process::id();
    let (image, component) = (format!("leak-image-{run}"), format!("leak-component-{run}"));
    let value = format!("leak-{}", hex::encode(rand::random::<[u8; 12]>()));
    let forms = forms(&value);

    // An operator's view: the stack's own user, everything, from before the secret is set.
    let address = app.nats_server.address();
    let operator = async_nats::ConnectOptions::with_user_and_password("service".into(), NATS_SERVICE_PASSWORD.into())
        .connect(&address)
        .await
        .unwrap();
    let operator_everything = collect(operator.subscribe(">").await.unwrap());
    operator.flush().await.unwrap();
    let body = json!({"name": "leak", "value": value, "components": [image, component]});
    let response = app.http.post(app.url("/api/v1/secrets")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());

    // The admin key's NATS user: `>` is refused to it (the server says so and delivers nothing), its inbox
    // is its own.
    let (admin, _) = connect_as_key(&address, "admin", ADMIN_KEY).await;
    let admin_everything = collect(admin.subscribe(">").await.unwrap());
    let admin_inbox = collect(admin.subscribe("_INBOX_admin.>").await.unwrap());
    admin.flush().await.unwrap();
    // Set again over NATS by the admin key (its own request holds the value; the answer must not).
    let again = ask(&admin, "artifacts.secret.put", &body).await;
    assert_eq!(again["status"], "updated", "{again}");

    // Image builds over NATS: one prints the value (masked) and succeeds, one prints it and fails.
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let mut image_builds = Vec::new();
    for (branch, last) in [("main", "echo done"), ("failing", "exit 3")] {
        let dockerfile = format!(
            "FROM busybox\nRUN echo {nonce}-{branch}\n\
             RUN --mount=type=secret,id=leak echo \"value: $(cat /run/secrets/leak)\" && cat /run/secrets/leak && {last}\n"
        );
        let body = json!({"dockerfile": dockerfile, "component": image, "branch": branch, "architecture": "amd64", "force": true});
        let accepted = ask(&admin, "artifacts.image.build", &body).await;
        let build_id = accepted["buildId"].as_str().unwrap_or_else(|| panic!("{accepted}")).to_owned();
        let record = wait_over_nats(&admin, &build_id).await;
        let expected = if branch == "main" { "succeeded" } else { "failed" };
        assert_eq!(record["status"], expected, "{record}");
        image_builds.push(build_id);
    }
    let found =
        ask(&admin, "artifacts.image.get", &json!({"component": image, "branch": "main", "architecture": "amd64"}))
            .await;
    assert_eq!(found["status"], "found", "{found}");

    // Component builds over NATS likewise.
    let repo = GitRepo::new().await;
    let toml = |command: &str| format!("{}secrets = [\"leak\"]\n", manifest(command, &[]));
    repo.commit_and_tag(
        &[("artifact.toml", &toml("echo \"value: $(cat /run/secrets/leak)\"; date > /out/x"), false)],
        "v1",
    )
    .await;
    repo.commit_and_tag(&[("artifact.toml", &toml("cat /run/secrets/leak; exit 4"), false)], "v2").await;
    let mut component_builds = Vec::new();
    for (tag, expected) in [("v1", "succeeded"), ("v2", "failed")] {
        let body = json!({"url": repo.url(), "component": component, "tag": tag, "architecture": "amd64"});
        let accepted = ask(&admin, "artifacts.component.build", &body).await;
        let build_id = accepted["buildId"].as_str().unwrap_or_else(|| panic!("{accepted}")).to_owned();
        let record = wait_over_nats(&admin, &build_id).await;
        assert_eq!(record["status"], expected, "{record}");
        component_builds.push(build_id);
    }
    let found =
        ask(&admin, "artifacts.component.get", &json!({"component": component, "tag": "v1", "architecture": "amd64"}))
            .await;
    assert_eq!(found["status"], "found", "{found}");

    // What else a client asks: listings, the secrets themselves, each build's log (HTTP: no NATS subject
    // serves logs to clients; the gateway reads them over the stack's connection, which the operator sees).
    let listed = ask(&admin, "artifacts.build.list", &json!({"component": image})).await;
    assert!(listed["builds"].is_array(), "{listed}");
    ask(&admin, "artifacts.build.list", &json!({"component": component})).await;
    let secrets = ask(&admin, "artifacts.secret.list", &json!({})).await;
    assert_eq!(secrets["secrets"][0]["name"], "leak", "{secrets}");
    ask(&admin, "artifacts.catalog.images", &json!({})).await;
    ask(&admin, "artifacts.catalog.components", &json!({})).await;
    let mut masked = 0;
    for build_id in image_builds.iter().chain(&component_builds) {
        let (lines, _) = app.follow_logs(build_id).await;
        let log = lines.join("\n");
        assert!(!holds(log.as_bytes(), &forms), "the log of {build_id} shows the value:\n{log}");
        masked += lines
            .iter()
            .filter(|line| line.ends_with("value: ***") || line.ends_with(" ***") || *line == "***")
            .count();
        let record = app.get(&format!("/api/v1/builds/{build_id}")).await.text().await.unwrap();
        assert!(!holds(record.as_bytes(), &forms), "the record of {build_id} holds the value: {record}");
    }
    assert!(masked >= 4, "the builds printed the value (masked) in their logs: {masked} masked lines");
    admin.flush().await.unwrap();
    operator.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let admin_seen: Vec<(String, Vec<u8>)> =
        admin_everything.lock().unwrap().iter().chain(admin_inbox.lock().unwrap().iter()).cloned().collect();
    println!("the admin key's NATS user received {} messages", admin_seen.len());
    assert!(admin_seen.len() >= 10, "the admin key's answers arrive on its inbox: {}", admin_seen.len());
    let leaked: Vec<&String> =
        admin_seen.iter().filter(|(_, bytes)| holds(bytes, &forms)).map(|(subject, _)| subject).collect();
    assert!(leaked.is_empty(), "messages the admin key read hold the value: {leaked:?}");

    let operator_seen = operator_everything.lock().unwrap().clone();
    let mut subjects: Vec<&str> = operator_seen.iter().map(|(subject, _)| subject.as_str()).collect();
    subjects.sort();
    subjects.dedup();
    let in_clear: Vec<&String> =
        operator_seen.iter().filter(|(_, bytes)| holds(bytes, &forms)).map(|(subject, _)| subject).collect();
    println!(
        "the operator's `>` received {} messages on {} subjects; the value in the clear in {} of them: {in_clear:?}",
        operator_seen.len(),
        subjects.len(),
        in_clear.len()
    );
    assert!(operator_seen.iter().any(|(subject, _)| subject.starts_with("artifacts.logs.")), "{subjects:?}");
    // The search sees what travels: the Dockerfile's unique line is in the stack's messages (the upload).
    assert!(operator_seen.iter().any(|(_, bytes)| holds(bytes, &[nonce.to_string().into_bytes()])));
    // Only the requests that set the value carry it, on their way from the gateway (or the admin's
    // connection) to the gc function, which seals it; no job, record, log, event or reply does.
    assert!(
        in_clear.iter().all(|subject| subject.as_str() == "artifacts.secret.put"),
        "stack-internal messages hold the value in the clear: {in_clear:?}"
    );
    assert_eq!(in_clear.len(), 2, "the two puts, as they were sent: {in_clear:?}");

    let logged = LOGGED.lock().unwrap().clone();
    let logged_lines = logged.split(|b| *b == b'\n').filter(|line| !line.is_empty()).count();
    println!("the stack logged {logged_lines} lines during the test");
    if let Ok(path) = std::env::var("SECRET_LEAKS_LOG") {
        std::fs::write(path, &logged).unwrap();
    }
    assert!(logged_lines > 20, "the stack's logs were captured");
    let leaking: Vec<String> = logged
        .split(|b| *b == b'\n')
        .filter(|line| holds(line, &forms))
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect();
    assert!(leaking.is_empty(), "the stack's own log lines hold the value:\n{}", leaking.join("\n"));
    // The builds themselves are named in the logs: what was captured is the stack's logging of them.
    let text = String::from_utf8_lossy(&logged);
    assert!(image_builds.iter().chain(&component_builds).all(|id| text.contains(id.as_str())), "every build is logged");
}
