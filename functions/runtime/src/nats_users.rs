//! NATS users that follow the API keys, in two accounts.
//!
//! A NATS client connects with its key: user name = the key id (`admin` for the bootstrap admin key),
//! password = the key itself. nats-server 2.9 has no API to add users, so the users are a generated
//! configuration file (`nats-users.conf`, included by `nats/nats-server.auth.conf`) that is rewritten
//! whenever the keys bucket changes, followed by a configuration reload: nats-server then applies the
//! new permissions to open connections and closes those whose user is gone (a revoked key).
//!
//! ```text
//!   account STACK (JetStream)                      account CLIENTS (no JetStream)
//!   +-------------------------------+   exports    +-----------------------------------+
//!   | service: gateway, functions   | -----------> | <key id>, admin: public subjects  |
//!   | streams, buckets, obj. stores |   imports    |   of their scopes, $SRV.>         |
//!   | replies: _INBOX_service.>     | <----------- | anonymous: $SRV.> only            |
//!   +-------------------------------+  _R_.* only  +-----------------------------------+
//! ```
//!
//! Why two accounts: a request's reply subject is whatever the requester wrote, and nats-server does
//! not check that the requester may read it. With one account, a client asking `$SRV.PING` with the
//! reply subject `$KV.artifacts_keys.<id>` made the stack's own user overwrite a key record. Across
//! accounts the server rewrites every imported request's reply subject into the exporting account's
//! `_R_.` space and carries the answer back into the client's account, where no stream, bucket or job
//! subject exists: whatever a client names, an answer can land only in its own account. The services
//! also check the reply subject before answering ([`crate::service::reply_allowed`]), so a slip in
//! this file alone does not reopen the hole.
//!
//! Who may do what:
//! - `service` (account STACK): the stack's own processes; everything. They receive replies on
//!   [`SERVICE_INBOX_PREFIX`](crate::nats::SERVICE_INBOX_PREFIX), in an account no client is in.
//! - a key (account CLIENTS): publish on the public subjects its scopes reach (`read`: lookups, build
//!   records and archive downloads; `build`: also submissions and push events), and on `$SRV.>`;
//!   subscribe only to its own inbox `_INBOX_<key id>.>`. Component patterns are checked by the service
//!   on each request.
//! - a connection without credentials (`anonymous`, account CLIENTS): `$SRV.>` discovery only.
//!
//! Passwords are bcrypt hashes, so the file holds no secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use artifacts_store::Store;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use artifacts_schemas::messages::keys::{Scope, StoredKey};
use artifacts_schemas::{Endpoint, Subjects, Timestamp};

use crate::auth::ADMIN_KEY_ID;

/// bcrypt cost of NATS passwords: the least bcrypt has. nats-server checks the hash at every connect,
/// and again for every open connection at every configuration reload (every key change), holding
/// JetStream's API meanwhile: at cost 10, eight of the stack's connections kept JetStream unanswered for
/// 1.2 to 1.4 s after each key change; at cost 4, 15 ms. Slow hashing protects guessable passwords, and
/// these are not: every password is a 256-bit random key.
pub const BCRYPT_COST: u32 = 4;

pub const SERVICE_USER: &str = "service";
pub const ANONYMOUS_USER: &str = "anonymous";

/// The account of the stack's processes and of every stream, bucket and object store.
pub const STACK_ACCOUNT: &str = "STACK";
/// The account of every API key's NATS user and of connections without credentials.
pub const CLIENTS_ACCOUNT: &str = "CLIENTS";

/// How long the server keeps routing `$SRV` answers (several services answer one ping) to a client.
const DISCOVERY_ANSWER_WINDOW: &str = "5s";

/// The bcrypt hash nats-server checks a password against (slow on purpose: run it off async threads).
pub fn bcrypt(password: &str) -> String {
    bcrypt::hash(password, BCRYPT_COST).expect("bcrypt hashes any password")
}

/// The users every deployment has, whatever keys exist.
pub struct FixedUsers {
    /// bcrypt of the `service` user's password.
    pub service_bcrypt: String,
    /// bcrypt of the bootstrap admin key, if there is one.
    pub admin_bcrypt: Option<String>,
}

/// The subjects a key with `scope` may publish on.
pub fn publish_permissions(subjects: &Subjects, scope: Scope) -> Vec<String> {
    let mut allowed: Vec<String> = Endpoint::ALL
        .into_iter()
        .filter(|endpoint| endpoint.scope() <= scope)
        .map(|endpoint| subjects.endpoint(endpoint))
        .collect();
    allowed.push(subjects.archive_transfers_wildcard());
    allowed.push("$SRV.>".into());
    allowed
}

/// The subjects the stack serves to clients: every endpoint and the archive transfers. Discovery
/// (`$SRV.>`) is exported beside them, with several answers per request.
fn served_subjects(subjects: &Subjects) -> Vec<String> {
    let mut served: Vec<String> = Endpoint::ALL.into_iter().map(|endpoint| subjects.endpoint(endpoint)).collect();
    served.push(subjects.archive_transfers_wildcard());
    served
}

/// The users file for these keys: the two accounts, their users, and what STACK serves to CLIENTS.
/// Expired keys and keys without a NATS password are left out.
pub fn render(subjects: &Subjects, fixed: &FixedUsers, keys: &BTreeMap<String, StoredKey>) -> String {
    let mut clients = Vec::new();
    if let Some(admin) = &fixed.admin_bcrypt {
        clients.push(key_user(subjects, ADMIN_KEY_ID, admin, Scope::Admin));
    }
    let now = Timestamp::now();
    for stored in keys.values() {
        let info = &stored.info;
        let (Some(password), Some(scope)) = (&stored.nats_password_bcrypt, info.scope()) else { continue };
        if info.expires_at.is_some_and(|at| at <= now) || !crate::auth::is_key_id(&info.key_id) {
            continue;
        }
        clients.push(key_user(subjects, &info.key_id, password, scope));
    }
    // Anyone may connect without credentials, as this user. It has no password: nats-server 2.9 checks a
    // `no_auth_user` by comparing its stored password with itself, which a bcrypt hash never passes.
    clients.push(user(ANONYMOUS_USER, None, &["$SRV.>".into()], &["_INBOX.>".into()]));
    let served = served_subjects(subjects);
    let exports: String = served
        .iter()
        .map(|subject| format!("      {{ service: {} }}\n", quoted(subject)))
        .chain([format!(
            "      {{ service: \"$SRV.>\", response: stream, threshold: \"{DISCOVERY_ANSWER_WINDOW}\" }}\n"
        )])
        .collect();
    let imports: String = served
        .iter()
        .map(String::as_str)
        .chain(["$SRV.>"])
        .map(|subject| format!("      {{ service: {{ account: {STACK_ACCOUNT}, subject: {} }} }}\n", quoted(subject)))
        .collect();
    let service = user(SERVICE_USER, Some(&fixed.service_bcrypt), &[">".into()], &[">".into()]);
    format!(
        "# Generated from the API keys (artifacts_keys bucket); rewritten on every change. Do not edit.\n\
         accounts {{\n  {STACK_ACCOUNT}: {{\n    jetstream: enabled\n    users = [\n{service}    ]\n    exports = [\n{exports}    ]\n  }}\n\
         \x20 {CLIENTS_ACCOUNT}: {{\n    users = [\n{}    ]\n    imports = [\n{imports}    ]\n  }}\n}}\nno_auth_user: {ANONYMOUS_USER}\n",
        clients.concat()
    )
}

fn key_user(subjects: &Subjects, key_id: &str, password: &str, scope: Scope) -> String {
    user(key_id, Some(password), &publish_permissions(subjects, scope), &[format!("_INBOX_{key_id}.>")])
}

fn user(name: &str, password: Option<&str>, publish: &[String], subscribe: &[String]) -> String {
    let list = |subjects: &[String]| subjects.iter().map(|s| quoted(s)).collect::<Vec<_>>().join(", ");
    let password = password.map(|p| format!("password: {}, ", quoted(p))).unwrap_or_default();
    format!(
        "    {{ user: {}, {password}permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }} }} }}\n",
        quoted(name),
        list(publish),
        list(subscribe)
    )
}

/// A string in nats-server's configuration syntax; quoted, so a bcrypt hash's `$` is not a variable.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Moves a JetStream store made before the two accounts (everything in nats-server's global account
/// `$G`) to [`STACK_ACCOUNT`], so that a server started with the accounts finds its streams. Run before
/// the server starts; a store already moved, or new, is left alone. Only for a server of its own: a
/// cluster's nodes record their streams' accounts in their metadata too.
pub fn adopt_global_account_store(store_dir: &Path) -> std::io::Result<()> {
    let (global, stack) = (store_dir.join("jetstream").join("$G"), store_dir.join("jetstream").join(STACK_ACCOUNT));
    if global.is_dir() && !stack.exists() {
        tracing::info!(from = %global.display(), to = %stack.display(), "moving the JetStream store to the stack's account");
        std::fs::rename(global, stack)?;
    }
    Ok(())
}

/// A reload of the nats-server with this pid (SIGHUP, as `nats-server --signal reload` sends).
pub fn reload_by_signal(pid: u32) -> impl Fn() -> std::io::Result<()> {
    move || {
        let pid = i32::try_from(pid).map_err(std::io::Error::other)?;
        // SAFETY: kill(2) with a pid and a signal number; it touches no memory of this process.
        match unsafe { libc::kill(pid, libc::SIGHUP) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }
}

/// Writes `text` to `file` atomically (a reader never sees half a file).
pub fn write_atomically(file: &Path, text: &str) -> std::io::Result<()> {
    let partial = file.with_extension("conf.partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(partial, file)
}

/// Keeps `file` equal to what [`render`] makes of the keys bucket, and calls `reload` after each
/// rewrite, until `shutdown`. A key that expires is taken out at its expiry.
pub async fn follow(
    store: Store,
    subjects: Subjects,
    fixed: FixedUsers,
    file: PathBuf,
    reload: impl Fn() -> std::io::Result<()>,
    shutdown: CancellationToken,
) {
    let mut known: BTreeMap<String, StoredKey> = BTreeMap::new();
    let mut written = None;
    while !shutdown.is_cancelled() {
        let watch = match store.key_changes().await {
            Ok(watch) => watch,
            Err(err) => {
                tracing::warn!(%err, "cannot watch API keys for NATS users; trying again");
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = shutdown.cancelled() => return }
            }
        };
        let mut watch = std::pin::pin!(watch);
        known.clear();
        let mut caught_up = false;
        loop {
            let next_expiry = known
                .values()
                .filter_map(|k| k.info.expires_at)
                .filter(|at| *at > Timestamp::now())
                .min()
                .map(|at| Duration::try_from(at.0 - Timestamp::now().0).unwrap_or_default())
                .unwrap_or(Duration::from_secs(3600));
            let entry = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(next_expiry) => None,
                change = watch.next() => match change {
                    Some(change) => Some(change),
                    None => break,
                },
            };
            if let Some(change) = entry {
                caught_up |= change.caught_up;
                match change.key {
                    Some(stored) => drop(known.insert(change.key_id, stored)),
                    None => drop(known.remove(&change.key_id)),
                }
            }
            if !caught_up {
                continue;
            }
            let text = render(&subjects, &fixed, &known);
            if written.as_ref() == Some(&text) {
                continue;
            }
            match write_atomically(&file, &text).and_then(|()| reload()) {
                Ok(()) => {
                    tracing::info!(users = known.len(), "NATS users follow the API keys");
                    written = Some(text);
                }
                Err(err) => tracing::error!(%err, file = %file.display(), "cannot update the NATS users"),
            }
        }
        tracing::warn!("the watch on API keys ended; following them again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use artifacts_schemas::messages::keys::ApiKeyInfo;

    #[test]
    fn users_follow_scopes_and_leave_out_expired_keys() {
        let subjects = Subjects::default();
        let key = |id: &str, scope: Scope, expires_at: Option<Timestamp>| StoredKey {
            info: ApiKeyInfo {
                key_id: id.into(),
                name: id.into(),
                scopes: vec![scope],
                components: None,
                expires_at,
                linux_username: None,
                github_username: None,
                created_at: Timestamp::now(),
            },
            secret_sha256: String::new(),
            nats_password_bcrypt: Some("$2b$04$hash".into()),
        };
        let keys = BTreeMap::from([
            ("00000000000000aa".to_owned(), key("00000000000000aa", Scope::Read, None)),
            ("00000000000000bb".to_owned(), key("00000000000000bb", Scope::Build, None)),
            ("00000000000000cc".to_owned(), key("00000000000000cc", Scope::Read, Some(Timestamp::now()))),
        ]);
        let fixed = FixedUsers { service_bcrypt: "$2b$04$service".into(), admin_bcrypt: None };
        let text = render(&subjects, &fixed, &keys);
        let line = |id: &str| text.lines().find(|l| l.contains(&format!("user: \"{id}\""))).map(str::to_owned);
        let reader = line("00000000000000aa").unwrap();
        assert!(reader.contains("\"artifacts.image.get\"") && !reader.contains("\"artifacts.image.build\""));
        assert!(reader.contains("\"_INBOX_00000000000000aa.>\"") && !reader.contains("\"_INBOX.>\""));
        let builder = line("00000000000000bb").unwrap();
        assert!(builder.contains("\"artifacts.image.build\"") && builder.contains("\"artifacts.git.push\""));
        assert!(!builder.contains("git.push.accepted"), "only the stack stores push events");
        assert!(line("00000000000000cc").is_none(), "an expired key is no NATS user");
        assert!(text.contains("no_auth_user: anonymous"));
        let (stack, clients) = text.split_once("CLIENTS: {").unwrap();
        assert!(stack.contains("user: \"service\"") && stack.contains("jetstream: enabled"));
        assert!(!clients.contains("user: \"service\"") && !clients.contains("jetstream"), "clients have no JetStream");
        assert!(clients.contains("user: \"00000000000000aa\"") && clients.contains("user: \"anonymous\""));
        for line in clients.lines().filter(|line| line.contains("account: STACK")) {
            assert!(
                line.contains("\"artifacts.") || line.contains("\"$SRV.>\""),
                "only endpoints, transfers and discovery are served to clients: {line}"
            );
            assert!(!line.contains(".jobs.") && !line.contains("$KV") && !line.contains("$JS"), "{line}");
        }
        assert!(text.contains("\"$2b$04$service\""), "hashes are quoted, so `$` is no variable");
    }
}
