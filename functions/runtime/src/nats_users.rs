//! NATS users that follow the API keys.
//!
//! A NATS client connects with its key: user name = the key id (`admin` for the bootstrap admin key),
//! password = the key itself. nats-server 2.9 has no API to add users, so the users are a generated
//! configuration file (`nats-users.conf`, included by `nats/nats-server.auth.conf`) that is rewritten
//! whenever the keys bucket changes, followed by a configuration reload: nats-server then applies the
//! new permissions to open connections and closes those whose user is gone (a revoked key).
//!
//! Who may do what:
//! - `service`: the stack's own processes; everything. They receive replies on
//!   [`SERVICE_INBOX_PREFIX`](crate::nats::SERVICE_INBOX_PREFIX), which no client may subscribe to.
//! - a key: publish on the public subjects its scopes reach (`read`: lookups, build records and archive
//!   downloads; `build`: also submissions and push events), and on `$SRV.>`; subscribe only to its own
//!   inbox `_INBOX_<key id>.>`. Component patterns are checked by the service on each request.
//! - a connection without credentials (`anonymous`): `$SRV.>` discovery only.
//!
//! Passwords are bcrypt hashes, so the file holds no secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use artifacts_schemas::messages::keys::{Scope, StoredKey};
use artifacts_schemas::{Endpoint, Subjects, Timestamp};

use crate::auth::ADMIN_KEY_ID;

/// bcrypt cost of NATS passwords: nats-server checks the hash at every connect.
pub const BCRYPT_COST: u32 = 10;

pub const SERVICE_USER: &str = "service";
pub const ANONYMOUS_USER: &str = "anonymous";

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

/// The users file for these keys. Expired keys and keys without a NATS password are left out.
pub fn render(subjects: &Subjects, fixed: &FixedUsers, keys: &BTreeMap<String, StoredKey>) -> String {
    let mut users = vec![user(SERVICE_USER, Some(&fixed.service_bcrypt), &[">".into()], &[">".into()])];
    if let Some(admin) = &fixed.admin_bcrypt {
        users.push(key_user(subjects, ADMIN_KEY_ID, admin, Scope::Admin));
    }
    let now = Timestamp::now();
    for stored in keys.values() {
        let info = &stored.info;
        let (Some(password), Some(scope)) = (&stored.nats_password_bcrypt, info.scope()) else { continue };
        if info.expires_at.is_some_and(|at| at <= now) || !crate::auth::is_key_id(&info.key_id) {
            continue;
        }
        users.push(key_user(subjects, &info.key_id, password, scope));
    }
    // Anyone may connect without credentials, as this user. It has no password: nats-server 2.9 checks a
    // `no_auth_user` by comparing its stored password with itself, which a bcrypt hash never passes.
    users.push(user(ANONYMOUS_USER, None, &["$SRV.>".into()], &["_INBOX.>".into()]));
    format!(
        "# Generated from the API keys (artifacts_keys bucket); rewritten on every change. Do not edit.\n\
         authorization {{\n  users = [\n{}  ]\n}}\nno_auth_user: {ANONYMOUS_USER}\n",
        users.concat()
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
    keys: kv::Store,
    subjects: Subjects,
    fixed: FixedUsers,
    file: PathBuf,
    reload: impl Fn() -> std::io::Result<()>,
    shutdown: CancellationToken,
) {
    let mut known: BTreeMap<String, StoredKey> = BTreeMap::new();
    let mut written = None;
    while !shutdown.is_cancelled() {
        let mut watch = match keys.watch_with_history(">").await {
            Ok(watch) => watch,
            Err(err) => {
                tracing::warn!(%err, "cannot watch API keys for NATS users; trying again");
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = shutdown.cancelled() => return }
            }
        };
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
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => Some(entry),
                    _ => break,
                },
            };
            if let Some(entry) = entry {
                caught_up |= entry.delta == 0 || entry.seen_current;
                match entry.operation {
                    kv::Operation::Put => {
                        if let Ok(stored) = serde_json::from_slice::<StoredKey>(&entry.value) {
                            known.insert(entry.key, stored);
                        }
                    }
                    kv::Operation::Delete | kv::Operation::Purge => {
                        known.remove(&entry.key);
                    }
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
        assert!(text.contains("\"$2b$04$service\""), "hashes are quoted, so `$` is no variable");
    }
}
