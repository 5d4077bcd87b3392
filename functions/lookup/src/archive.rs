//! `<prefix>.component.archive`: a component's tarball for NATS clients, who may not read the object
//! store themselves (it holds every team's archives).
//!
//! The lookup authorizes the request, opens the object and answers with a transfer subject; the client
//! then requests that subject for each next chunk. Each chunk is a reply to a request, so a slow client
//! sets the pace and nothing piles up in either process. The subject's random id is the transfer's only
//! credential and is sent only to the authorized caller; a transfer idle for [`IDLE`] ends.
//!
//! Each open transfer holds an object-store reader, so they are counted ([`Transfers`]): at most
//! [`MAX_PER_KEY`] per key and [`MAX_OPEN`] in all, and a chunk's buffer exists only while the chunk
//! is read and sent. (20,000 requests from one read key once held 2.75 GB here: a transfer took its
//! 512 KiB buffer at the start and kept it for its whole life.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncReadExt;

use artifacts_runtime::auth::Caller;
use artifacts_runtime::service::{reply_allowed, Reply};
use artifacts_runtime::Nats;
use artifacts_schemas::messages::keys::Scope;
use artifacts_schemas::{parse_json, ArchiveTransfer, ComponentLookupStatus, ComponentQuery, Failure, RequestError};
use artifacts_store::Objects;

/// The header of the last chunk: the archive's digest.
pub const END_HEADER: &str = "Artifacts-Archive-End";

/// Bytes per chunk: half of nats-server's default 1 MiB payload limit.
const CHUNK_BYTES: usize = 512 * 1024;

const IDLE: Duration = Duration::from_secs(30);

/// Open transfers one key may hold: enough for a client fetching dependencies side by side.
pub const MAX_PER_KEY: usize = 8;
/// Open transfers in all, whoever holds them.
pub const MAX_OPEN: usize = 128;

/// The open transfers, by key id.
#[derive(Default)]
pub struct Transfers {
    open: Mutex<HashMap<String, usize>>,
}

/// One open transfer, counted until dropped.
struct Permit {
    transfers: Arc<Transfers>,
    key_id: String,
}

impl Transfers {
    fn open(self: &Arc<Self>, key_id: &str) -> Result<Permit, RequestError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.get(key_id).copied().unwrap_or(0) >= MAX_PER_KEY {
            return Err(RequestError::new(
                Failure::RateLimited,
                format!("this API key has {MAX_PER_KEY} archive transfers open: finish one (or let it idle out in {}s) first", IDLE.as_secs()),
            ));
        }
        if open.values().sum::<usize>() >= MAX_OPEN {
            return Err(RequestError::unavailable(format!(
                "{MAX_OPEN} archive transfers are open: try again in a few seconds, or download over HTTP"
            )));
        }
        *open.entry(key_id.to_owned()).or_default() += 1;
        Ok(Permit { transfers: Arc::clone(self), key_id: key_id.to_owned() })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.transfers.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key_id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key_id);
            }
        }
    }
}

pub async fn start(
    nats: &Nats,
    transfers: &Arc<Transfers>,
    caller: &Caller,
    payload: &[u8],
) -> Result<Reply, RequestError> {
    let query: ComponentQuery = parse_json(payload)?;
    caller.require_for(Scope::Read, &query.component)?;
    let permit = transfers.open(&caller.key_id)?;
    let record = nats.store.component(&query).await?.ok_or_else(|| {
        RequestError::not_found(format!(
            "component {} at tag {} for {} is not stored",
            query.component, query.tag, query.architecture
        ))
    })?;
    // Opened before answering, so that a missing object is a clear 503 now, not a silent transfer.
    let reader =
        nats.store.object(Objects::Archives, &record.object).await.map_err(|err| {
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
        // The permit lives as long as the transfer.
        if let Err(err) = serve_chunks(&client, requests, reader, &digest, &permit.key_id).await {
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
    key_id: &str,
) -> Result<(), async_nats::Error> {
    while let Ok(Some(request)) = tokio::time::timeout(IDLE, requests.next()).await {
        let Some(reply) = request.reply.filter(|reply| reply_allowed(reply, Some(key_id))) else { continue };
        let mut chunk = vec![0u8; CHUNK_BYTES];
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
        chunk.truncate(filled);
        client.publish_with_headers(reply, headers, chunk.into()).await?;
        if last {
            return Ok(());
        }
    }
    Ok(())
}
