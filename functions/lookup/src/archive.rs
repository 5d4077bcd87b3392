//! `<prefix>.component.archive`: a component's tarball for NATS clients, who may not read the object
//! store themselves (it holds every team's archives).
//!
//! The lookup authorizes the request, opens the object and answers with a transfer subject; the client
//! then requests that subject for each next chunk. Each chunk is a reply to a request, so a slow client
//! sets the pace and nothing piles up in either process. The subject's random id is the transfer's only
//! credential and is sent only to the authorized caller; a transfer idle for [`IDLE`] ends.

use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncReadExt;

use artifacts_runtime::auth::Caller;
use artifacts_runtime::nats::read_json;
use artifacts_runtime::service::Reply;
use artifacts_runtime::Nats;
use artifacts_schemas::messages::keys::Scope;
use artifacts_schemas::{
    parse_json, ArchiveTransfer, ComponentLookupStatus, ComponentQuery, ComponentRecord, RequestError,
};

/// The header of the last chunk: the archive's digest.
pub const END_HEADER: &str = "Artifacts-Archive-End";

/// Bytes per chunk: half of nats-server's default 1 MiB payload limit.
const CHUNK_BYTES: usize = 512 * 1024;

const IDLE: Duration = Duration::from_secs(30);

pub async fn start(nats: &Nats, caller: &Caller, payload: &[u8]) -> Result<Reply, RequestError> {
    let query: ComponentQuery = parse_json(payload)?;
    caller.require_for(Scope::Read, &query.component)?;
    let record =
        read_json::<ComponentRecord>(&nats.stores.components, &query.record_key()).await?.ok_or_else(|| {
            RequestError::not_found(format!(
                "component {} at tag {} for {} is not stored",
                query.component, query.tag, query.architecture
            ))
        })?;
    // Opened before answering, so that a missing object is a clear 503 now, not a silent transfer.
    let reader =
        nats.stores.archives.get(&record.object).await.map_err(|err| {
            RequestError::unavailable(format!("the object store cannot serve {}: {err}", record.object))
        })?;
    let transfer = nats.subjects.archive_transfer(&hex::encode(rand::random::<[u8; 16]>()));
    let requests = nats
        .client
        .subscribe(transfer.clone())
        .await
        .map_err(|err| RequestError::unavailable(format!("NATS is unavailable: {err}")))?;
    let (client, object, digest) = (nats.client.clone(), record.object.clone(), record.digest.clone());
    tokio::spawn(async move {
        if let Err(err) = serve_chunks(&client, requests, reader, &digest).await {
            tracing::warn!(%err, %object, "an archive transfer over NATS ended early");
        }
    });
    Ok(Reply::ok(&ArchiveTransfer {
        status: ComponentLookupStatus::Found,
        error_message: None,
        digest: record.digest,
        size: record.size,
        build_id: record.build_id,
        built_at: record.built_at,
        transfer,
    }))
}

async fn serve_chunks(
    client: &async_nats::Client,
    mut requests: async_nats::Subscriber,
    mut reader: impl tokio::io::AsyncRead + Unpin,
    digest: &str,
) -> Result<(), async_nats::Error> {
    let mut chunk = vec![0u8; CHUNK_BYTES];
    while let Ok(Some(request)) = tokio::time::timeout(IDLE, requests.next()).await {
        let Some(reply) = request.reply else { continue };
        let mut filled = 0;
        while filled < CHUNK_BYTES {
            match reader.read(&mut chunk[filled..]).await? {
                0 => break,
                read => filled += read,
            }
        }
        let mut headers = async_nats::HeaderMap::new();
        let last = filled < CHUNK_BYTES;
        if last {
            headers.insert(END_HEADER, digest);
        }
        client.publish_with_headers(reply, headers, chunk[..filled].to_vec().into()).await?;
        if last {
            return Ok(());
        }
    }
    Ok(())
}
