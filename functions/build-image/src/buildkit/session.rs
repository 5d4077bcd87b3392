//! A BuildKit session with the Docker engine, as `DOCKER_BUILDKIT=1 docker build` opens one: `POST
//! /session` upgraded to h2c, on which the engine calls our gRPC services: `FileSync` (the context and
//! the Dockerfile), `Auth` (the workers' registry credentials, for base images and cache sources),
//! `Secrets` (build secrets, from memory) and `Health`.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use bollard_buildkit_proto::health::health_server::{Health, HealthServer};
use bollard_buildkit_proto::health::{
    health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse, HealthListRequest,
    HealthListResponse,
};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use bollard_buildkit_proto::moby::filesync::v1::auth_server::{Auth, AuthServer};
use bollard_buildkit_proto::moby::filesync::v1::file_sync_server::FileSyncServer;
use bollard_buildkit_proto::moby::filesync::v1::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse, GetTokenAuthorityRequest,
    GetTokenAuthorityResponse, VerifyTokenAuthorityRequest, VerifyTokenAuthorityResponse,
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::{Request, Response, Status};

use super::engine;
use super::filesync::Dirs;

/// What a session offers the engine.
pub struct Services {
    pub dirs: Dirs,
    /// Registry host (`127.0.0.1:5000`) → (user, password).
    pub credentials: HashMap<String, (String, String)>,
    pub secrets: HashMap<String, Vec<u8>>,
}

const METHODS: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/moby.filesync.v1.FileSync/DiffCopy",
    "/moby.filesync.v1.Auth/Credentials",
    "/moby.buildkit.secrets.v1.Secrets/GetSecret",
];

/// A running session; dropping it ends it.
pub struct Session {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens session `id` on the engine at `host` and serves `services` on it until dropped.
pub async fn start(host: &str, api: &str, id: &str, shared_key: &str, services: Services) -> Result<Session, String> {
    let mut request = hyper::Request::builder()
        .method("POST")
        .uri(format!("/v{api}/session"))
        .header("Host", "docker")
        .header("Connection", "Upgrade")
        .header("Upgrade", "h2c")
        .header("X-Docker-Expose-Session-Uuid", id)
        .header("X-Docker-Expose-Session-Name", "artifacts")
        .header("X-Docker-Expose-Session-Sharedkey", shared_key);
    for method in METHODS {
        request = request.header("X-Docker-Expose-Session-Grpc-Method", method);
    }
    let request = request.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|err| err.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(engine::connect(host).await?))
        .await
        .map_err(|err| format!("the engine refused a session: {err}"))?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let response = sender.send_request(request).await.map_err(|err| format!("the engine refused a session: {err}"))?;
    if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!("the engine answered {} to a BuildKit session", response.status()));
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(|err| format!("the session did not start: {err}"))?;
    let io = Upgraded(TokioIo::new(upgraded));
    let Services { dirs, credentials, secrets } = services;
    let server = tonic::transport::Server::builder()
        .add_service(HealthServer::new(Healthy))
        .add_service(FileSyncServer::new(dirs))
        .add_service(AuthServer::new(Credentials(credentials)))
        .add_service(SecretsServer::new(SecretValues(secrets)));
    let task = tokio::spawn(async move {
        let incoming = futures::stream::iter([Ok::<_, std::io::Error>(io)]);
        if let Err(err) = server.serve_with_incoming(incoming).await {
            tracing::debug!(%err, "a BuildKit session ended");
        }
    });
    Ok(Session { task })
}

struct Upgraded(TokioIo<hyper::upgrade::Upgraded>);

impl tonic::transport::server::Connected for Upgraded {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Upgraded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

struct Healthy;

#[tonic::async_trait]
impl Health for Healthy {
    type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn check(&self, _: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse { status: ServingStatus::Serving as i32 }))
    }

    async fn list(&self, _: Request<HealthListRequest>) -> Result<Response<HealthListResponse>, Status> {
        Err(Status::unimplemented("list"))
    }

    async fn watch(&self, _: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }
}

/// Credentials for the registries we know; anonymous for the rest.
struct Credentials(HashMap<String, (String, String)>);

#[tonic::async_trait]
impl Auth for Credentials {
    async fn credentials(&self, request: Request<CredentialsRequest>) -> Result<Response<CredentialsResponse>, Status> {
        let host = request.into_inner().host;
        let (username, secret) = self.0.get(&host).cloned().unwrap_or_default();
        Ok(Response::new(CredentialsResponse { username, secret }))
    }

    async fn fetch_token(&self, _: Request<FetchTokenRequest>) -> Result<Response<FetchTokenResponse>, Status> {
        Err(Status::unimplemented("BuildKit fetches tokens with the credentials"))
    }

    async fn get_token_authority(
        &self,
        _: Request<GetTokenAuthorityRequest>,
    ) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("no token authority"))
    }

    async fn verify_token_authority(
        &self,
        _: Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("no token authority"))
    }
}

/// Build secrets by id; an unknown id is NotFound, which BuildKit treats as an absent secret.
struct SecretValues(HashMap<String, Vec<u8>>);

#[tonic::async_trait]
impl Secrets for SecretValues {
    async fn get_secret(&self, request: Request<GetSecretRequest>) -> Result<Response<GetSecretResponse>, Status> {
        match self.0.get(&request.get_ref().id) {
            Some(value) => Ok(Response::new(GetSecretResponse { data: value.clone() })),
            None => Err(Status::not_found("secret not found")),
        }
    }
}
