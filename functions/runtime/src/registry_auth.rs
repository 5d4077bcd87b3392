//! The registry behind the service's keys, with Docker's token authentication: the registry sends a client
//! without a token to the gateway's token endpoint (`GET /api/v1/registry/token`, its "realm"), which
//! checks the API key given as the Basic password and signs a short-lived token granting no more than the
//! key may do: `pull` on the repositories of components it may read; `push` and `delete` only to the
//! image workers' own identity and to admin keys. The registry trusts tokens signed by the key whose
//! certificate it is given (`auth.token.rootcertbundle`).
//!
//! The workers' identity is the user [`BUILDER_USER`] with a password derived from the admin key, so every
//! process that knows the admin key can push, and nothing else needs a stored secret.

use std::path::{Path, PathBuf};

use hmac::Mac;

use crate::configuration::Secret;

/// The registry's name for itself in tokens (`service`, the token's audience).
pub const SERVICE: &str = "artifacts-registry";
/// Who signs the tokens (`iss`).
pub const ISSUER: &str = "artifacts";
/// The image workers' registry user name.
pub const BUILDER_USER: &str = "artifacts-builder";
/// The token endpoint under the gateway's address.
pub const TOKEN_PATH: &str = "/api/v1/registry/token";

/// The image workers' registry password: HMAC-SHA256 of a fixed label under the admin key.
pub fn builder_password(admin_key: &str) -> Secret {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(admin_key.as_bytes()).expect("any key length");
    mac.update(b"artifacts registry builder");
    Secret::new(hex::encode(mac.finalize().into_bytes()))
}

/// Where the token-signing key and its certificate are kept.
#[derive(Debug, Clone)]
pub struct SigningFiles {
    pub key: PathBuf,
    pub certificate: PathBuf,
}

/// The signing key and certificate in `dir`, made (P-256, self-signed, the key readable by its owner
/// only) when absent.
pub fn ensure_signing_files(dir: &Path) -> std::io::Result<SigningFiles> {
    let files = SigningFiles { key: dir.join("registry-token.key"), certificate: dir.join("registry-token.crt") };
    if files.key.exists() && files.certificate.exists() {
        return Ok(files);
    }
    let key = rcgen::KeyPair::generate().map_err(std::io::Error::other)?;
    let mut params = rcgen::CertificateParams::new(vec![ISSUER.to_owned()]).map_err(std::io::Error::other)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "artifacts registry tokens");
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let certificate = params.self_signed(&key).map_err(std::io::Error::other)?;
    write_new(&files.key, &key.serialize_pem(), 0o600)?;
    write_new(&files.certificate, &certificate.pem(), 0o644)?;
    Ok(files)
}

fn write_new(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path)?;
    file.write_all(text.as_bytes())
}

/// The `auth` section of a `docker-registry` configuration that trusts the gateway at `gateway_url`.
pub fn registry_auth_config(gateway_url: &str, certificate: &Path) -> String {
    format!(
        "auth:\n  token:\n    realm: {}{TOKEN_PATH}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        gateway_url.trim_end_matches('/'),
        certificate.display()
    )
}
