//! Issue 30: one request, one trace. A request's id, taken from the client's `X-Request-Id` (or made
//! by the gateway), is named in the answer and appears on the log lines of that request in every process
//! it reaches: the gateway's, the function's that answered it and the worker's that built what it asked
//! for. The stack runs as `artifacts up` runs it, each process writing JSON lines to its own log file.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use artifacts_tests::require_docker;
use artifacts_tests::up::UpStack;

const HEADER: &str = "X-Request-Id";

#[tokio::test]
async fn a_request_id_follows_a_build_through_the_gateway_the_function_and_the_worker() {
    require_docker().await;
    let stack = UpStack::start(&[("ARTIFACTS__LOG__FORMAT", "json")]).await;
    let logs = stack.data.path().join("logs");
    let component = format!("traced-{:08x}", rand::random::<u32>());

    // A build, with the client's id: the answer names it, and the build succeeds.
    let build_id = format!("test-{:016x}", rand::random::<u64>());
    let answer = stack
        .http
        .post(stack.url("/api/v1/images?wait=120"))
        .bearer_auth(&stack.admin_key)
        .header(HEADER, &build_id)
        .json(&json!({
            "dockerfile": format!("FROM busybox:latest\nRUN echo {component} > /built\n"),
            "component": component,
            "branch": "main",
            "architecture": "amd64",
        }))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(header(&answer), Some(build_id.clone()), "the answer names the client's id");
    let record: Value = answer.json().await.expect("JSON");
    assert_eq!(record["status"], "succeeded", "{record}");

    // A lookup of what it built, with another id.
    let lookup_id = format!("test-{:016x}", rand::random::<u64>());
    let answer = stack
        .http
        .get(stack.url(&format!("/api/v1/images?component={component}&branch=main&architecture=amd64")))
        .bearer_auth(&stack.admin_key)
        .header(HEADER, &lookup_id)
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(answer.status(), 200);
    assert_eq!(header(&answer), Some(lookup_id.clone()));

    // The build's id: on the gateway's line of the request, on the submission handler's (a NATS request
    // in build-image) and on the worker's (the job, in the same process).
    let gateway = lines_with(&logs.join("gateway.log"), &build_id, |line| span_named(line, "request")).await;
    assert!(gateway.iter().any(|line| line["message"] == "answered"), "the gateway's lines: {gateway:?}");
    let handler = lines_with(&logs.join("build-image.log"), &build_id, |line| span_named(line, "request")).await;
    assert!(handler.iter().any(|line| line["message"] == "answered"), "the submission's lines: {handler:?}");
    let worker = lines_with(&logs.join("build-image.log"), &build_id, |line| span_named(line, "job")).await;
    assert!(
        worker.iter().any(|line| line["message"] == "build ended"),
        "the worker's lines of the build carry the id: {worker:?}"
    );
    // The lookup's id: on the gateway's lines and the lookup function's, and on nothing of the build's.
    lines_with(&logs.join("gateway.log"), &lookup_id, |line| span_named(line, "request")).await;
    lines_with(&logs.join("lookup.log"), &lookup_id, |line| line["message"] == "answered").await;
    let builder = std::fs::read_to_string(logs.join("build-image.log")).expect("the build-image log");
    assert!(!builder.contains(&lookup_id), "the lookup never reached build-image");

    // Straight over NATS: the client's id comes back on the reply and is on the lookup's lines; a
    // request without one is answered with the id the function made.
    let nats = async_nats::ConnectOptions::with_user_and_password("admin".into(), stack.admin_key.clone())
        .custom_inbox_prefix("_INBOX_admin")
        .connect(format!("127.0.0.1:{}", stack.nats_port))
        .await
        .expect("NATS connects");
    let nats_id = format!("test-{:016x}", rand::random::<u64>());
    let query = json!({"component": component, "branch": "main", "architecture": "amd64"}).to_string();
    for sent in [Some(nats_id.as_str()), None] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Authorization", format!("Bearer {}", stack.admin_key).as_str());
        if let Some(sent) = sent {
            headers.insert(HEADER, sent);
        }
        let reply = nats
            .request_with_headers("artifacts.image.get", headers, query.clone().into())
            .await
            .expect("the lookup answers");
        let answered = reply.headers.as_ref().and_then(|h| h.get(HEADER)).map(|v| v.as_str().to_owned());
        match sent {
            Some(sent) => assert_eq!(answered.as_deref(), Some(sent)),
            None => assert!(answered.is_some_and(|id| id.len() == 32), "the reply names the id the function made"),
        }
    }
    lines_with(&logs.join("lookup.log"), &nats_id, |line| line["message"] == "answered").await;

    // No id, or one unsafe to log or too long: the gateway makes one, each request its own.
    let mut made = Vec::new();
    for sent in [None, Some("two words"), Some("x\"}{"), Some(&*"a".repeat(129))] {
        let mut request = stack.http.get(stack.url("/api/v1/whoami")).bearer_auth(&stack.admin_key);
        if let Some(sent) = sent {
            request = request.header(HEADER, sent);
        }
        let answer = request.send().await.expect("the gateway answers");
        assert_eq!(answer.status(), 200);
        let id = header(&answer).expect("every answer names its request id");
        assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()), "a made id: {id:?} for {sent:?}");
        made.push(id);
    }
    made.sort();
    made.dedup();
    assert_eq!(made.len(), 4, "each request has its own id");
    // An error the gateway answers itself names the id too.
    let answer = stack.http.get(stack.url("/api/v1/whoami")).header(HEADER, "test-unauthenticated").send().await;
    let answer = answer.expect("the gateway answers");
    assert_eq!(answer.status(), 401);
    assert_eq!(header(&answer).as_deref(), Some("test-unauthenticated"));
}

fn header(answer: &reqwest::Response) -> Option<String> {
    answer.headers().get(HEADER).and_then(|value| value.to_str().ok()).map(str::to_owned)
}

/// Whether the line was logged inside a span called `name`.
fn span_named(line: &Value, name: &str) -> bool {
    line["span"]["name"] == name
        || line["spans"].as_array().is_some_and(|spans| spans.iter().any(|s| s["name"] == name))
}

/// The JSON lines of `log` whose span names `request_id`, once some of them are as `wanted` says (the
/// processes write through `artifacts up`, so a line may land a moment after the answer).
async fn lines_with(log: &Path, request_id: &str, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| {
                line["span"]["request_id"] == request_id
                    || line["spans"].as_array().is_some_and(|spans| spans.iter().any(|s| s["request_id"] == request_id))
            })
            .collect();
        if lines.iter().any(&wanted) {
            return lines;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no line of {} carries request id {request_id} as wanted; its lines with the id: {lines:?}\n{}",
            log.display(),
            text.lines().rev().take(40).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
