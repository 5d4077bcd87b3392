//! Image builds by the Docker engine's BuildKit, as `DOCKER_BUILDKIT=1 docker build` asks for them:
//! a session ([`session`]) that serves the context and the Dockerfile as two separate local sources
//! (`context`, `dockerfile`), registry credentials and build secrets; then `POST /build?version=2` with
//! `remote=client-session`, whose answer carries BuildKit's status stream ([`progress`]).

pub mod filesync;
pub mod progress;
pub mod session;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use base64::Engine as _;
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use prost::Message as _;

use artifacts_runtime::logs::BuildLog;
use bollard_buildkit_proto::moby::buildkit::v1::StatusResponse;

/// One BuildKit build: what it builds, from where, with what.
pub struct Request {
    /// The image name the engine tags the result with.
    pub tag: String,
    pub platform: String,
    pub network: String,
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// Images whose inline cache metadata the build may reuse.
    pub cache_from: Vec<String>,
    pub context_dir: PathBuf,
    /// A directory holding only the Dockerfile, as `Dockerfile`.
    pub dockerfile_dir: PathBuf,
    /// Registry host → (user, password), offered through the session.
    pub credentials: HashMap<String, (String, String)>,
    /// Build secrets (`RUN --mount=type=secret,id=<name>`), by name.
    pub secrets: Vec<(String, Vec<u8>)>,
    /// Names this build's session (its local sources are never reused by another build).
    pub build_key: String,
}

/// Why a build did not end in an image.
#[derive(Debug)]
pub enum Failure {
    /// The build ran and failed (a step, the Dockerfile): the engine's message.
    Build(String),
    /// The engine could not be reached or stopped answering.
    Engine(String),
}

/// The raw connection to the engine at `host` (`unix://…`, a socket path, `tcp://` or `http://`).
pub mod engine {
    pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
    impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

    pub async fn connect(host: &str) -> Result<Box<dyn Io>, String> {
        let unreachable = |err: std::io::Error| format!("no Docker engine at {host}: {err}");
        if let Some(path) = host.strip_prefix("unix://").or_else(|| host.starts_with('/').then_some(host)) {
            Ok(Box::new(tokio::net::UnixStream::connect(path).await.map_err(unreachable)?))
        } else {
            let address = host.trim_start_matches("tcp://").trim_start_matches("http://").trim_end_matches('/');
            Ok(Box::new(tokio::net::TcpStream::connect(address).await.map_err(unreachable)?))
        }
    }
}

/// Runs the build, writing its steps to `log`; the image is then in the engine as `request.tag`.
pub async fn build(host: &str, api: &str, request: Request, log: &mut BuildLog) -> Result<(), Failure> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let session_id = format!("artifacts-{}-{nanos:x}", request.build_key);
    let masked: Vec<String> =
        request.secrets.iter().filter_map(|(_, value)| String::from_utf8(value.clone()).ok()).collect();
    let services = session::Services {
        dirs: filesync::Dirs(HashMap::from([
            ("context".to_owned(), request.context_dir.clone()),
            ("dockerfile".to_owned(), request.dockerfile_dir.clone()),
        ])),
        credentials: request.credentials.clone(),
        secrets: request.secrets.iter().cloned().collect(),
    };
    let started = std::time::Instant::now();
    let _session = session::start(host, api, &session_id, &session_id, services).await.map_err(Failure::Engine)?;
    tracing::debug!(build_key = %request.build_key, took_ms = started.elapsed().as_secs_f64() * 1e3, "BuildKit session up");

    let query = build_query(&request, &session_id);
    let http = hyper::Request::builder()
        .method("POST")
        .uri(format!("/v{api}/build?{query}"))
        .header("Host", "docker")
        .header("Content-Type", "application/x-tar")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("a valid request");
    let io = engine::connect(host).await.map_err(Failure::Engine)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|err| Failure::Engine(format!("lost the Docker engine: {err}")))?;
    let connection = tokio::spawn(connection);
    let response = sender
        .send_request(http)
        .await
        .map_err(|err| Failure::Engine(format!("lost the Docker engine during the build: {err}")))?;
    let status = response.status();
    tracing::debug!(build_key = %request.build_key, at_ms = started.elapsed().as_secs_f64() * 1e3, "BuildKit build answered");
    let mut body = response.into_body().into_data_stream();
    if !status.is_success() {
        let mut text = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            text.extend_from_slice(&chunk);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&text).into_owned());
        return Err(if status.is_server_error() { Failure::Engine(message) } else { Failure::Build(message) });
    }
    let mut progress = progress::Progress::new(masked);
    let mut pending = Vec::new();
    let mut outcome = Err(Failure::Engine("the engine ended the build without a result".into()));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|err| Failure::Engine(format!("lost the Docker engine during the build: {err}")))?;
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some(result) = message(&line, &mut progress, log).await {
                if !matches!(outcome, Err(Failure::Build(_))) {
                    outcome = result;
                }
            }
        }
    }
    if !pending.is_empty() {
        if let Some(result) = message(&pending, &mut progress, log).await {
            if !matches!(outcome, Err(Failure::Build(_))) {
                outcome = result;
            }
        }
    }
    connection.abort();
    tracing::debug!(build_key = %request.build_key, at_ms = started.elapsed().as_secs_f64() * 1e3, "BuildKit build ended");
    outcome
}

/// `/build`'s query: BuildKit (`version=2`) with the context from the session.
fn build_query(request: &Request, session_id: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("version", "2")
        .append_pair("remote", "client-session")
        .append_pair("session", session_id)
        .append_pair("dockerfile", "Dockerfile")
        .append_pair("t", &request.tag)
        .append_pair("platform", &request.platform)
        .append_pair("networkmode", &request.network)
        .append_pair("rm", "1")
        .append_pair("forcerm", "1")
        .append_pair("buildargs", &serde_json::to_string(&request.build_args).expect("strings serialise"));
    if let Some(target) = &request.target {
        query.append_pair("target", target);
    }
    if !request.cache_from.is_empty() {
        query.append_pair("cachefrom", &serde_json::to_string(&request.cache_from).expect("strings serialise"));
    }
    query.finish()
}

/// One JSON message of `/build`'s answer: BuildKit status, a plain line, the image id or an error.
async fn message(line: &[u8], progress: &mut progress::Progress, log: &mut BuildLog) -> Option<Result<(), Failure>> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    if let Some(error) = value["errorDetail"]["message"].as_str().or_else(|| value["error"].as_str()) {
        return Some(Err(Failure::Build(error.to_owned())));
    }
    match value["id"].as_str() {
        Some("moby.buildkit.trace") => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(value["aux"].as_str()?).ok()?;
            let status = StatusResponse::decode(bytes.as_slice()).ok()?;
            for line in progress.update(status) {
                log.write(&line).await;
            }
            None
        }
        Some("moby.image.id") => Some(Ok(())),
        _ => {
            if let Some(text) = value["stream"].as_str() {
                log.write(text).await;
            }
            None
        }
    }
}
