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

/// The registry's TLS files: its certificate and key, and the CA that signed the certificate (absent for a
/// certificate given whose CA the system already trusts).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

/// A CA of the stack's own and a registry certificate it signs for `names` (DNS names or IP addresses),
/// in `dir`: `registry-ca.crt` and `registry-ca.key` (made once, kept), `registry-tls.crt` and
/// `registry-tls.key` (made again, by the same CA, when `names` differ from the ones they were made for,
/// kept in `registry-tls.names`). Keys are readable by their owner only.
pub fn ensure_tls_files(dir: &Path, names: &[String]) -> std::io::Result<TlsFiles> {
    let (ca_certificate, ca_key) = (dir.join("registry-ca.crt"), dir.join("registry-ca.key"));
    let files = TlsFiles {
        certificate: dir.join("registry-tls.crt"),
        key: dir.join("registry-tls.key"),
        ca: Some(ca_certificate.clone()),
    };
    let names_file = dir.join("registry-tls.names");
    let mut made_ca = false;
    let ca_key_pair = match std::fs::read_to_string(&ca_key) {
        Ok(pem) if ca_certificate.exists() => rcgen::KeyPair::from_pem(&pem).map_err(std::io::Error::other)?,
        _ => {
            let key = rcgen::KeyPair::generate().map_err(std::io::Error::other)?;
            let certificate = ca_params().self_signed(&key).map_err(std::io::Error::other)?;
            write_new(&ca_key, &key.serialize_pem(), 0o600)?;
            write_new(&ca_certificate, &certificate.pem(), 0o644)?;
            made_ca = true;
            key
        }
    };
    let wanted = names.join("\n");
    let current = std::fs::read_to_string(&names_file).ok();
    if !made_ca && current.as_deref() == Some(wanted.as_str()) && files.certificate.exists() && files.key.exists() {
        return Ok(files);
    }
    // The same subject and key as the CA certificate on disk: what the registry's certificate names as its
    // issuer, and what verifies it.
    let ca = ca_params().self_signed(&ca_key_pair).map_err(std::io::Error::other)?;
    let key = rcgen::KeyPair::generate().map_err(std::io::Error::other)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(std::io::Error::other)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names.first().map_or("artifacts registry", String::as_str));
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let certificate = params.signed_by(&key, &ca, &ca_key_pair).map_err(std::io::Error::other)?;
    write_new(&files.key, &key.serialize_pem(), 0o600)?;
    write_new(&files.certificate, &certificate.pem(), 0o644)?;
    write_new(&names_file, &wanted, 0o644)?;
    Ok(files)
}

fn ca_params() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "artifacts registry CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    params
}

/// The `http.tls` lines of a `docker-registry` configuration (to follow its `http:` section).
pub fn registry_tls_config(files: &TlsFiles) -> String {
    let quoted = |path: &Path| serde_json::to_string(&path.display().to_string()).expect("strings serialise");
    format!("  tls:\n    certificate: {}\n    key: {}\n", quoted(&files.certificate), quoted(&files.key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_are_kept_and_remade_for_other_names() {
        let dir = std::env::temp_dir().join(format!("artifacts-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = Dir(dir);
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let first = ensure_tls_files(dir.path(), &names).unwrap();
        let read = |path: &Path| std::fs::read_to_string(path).unwrap();
        let (ca, certificate) = (read(first.ca.as_deref().unwrap()), read(&first.certificate));
        assert!(certificate.starts_with("-----BEGIN CERTIFICATE-----"));
        let again = ensure_tls_files(dir.path(), &names).unwrap();
        assert_eq!(read(&again.certificate), certificate, "the same names keep the certificate");
        let other = ensure_tls_files(dir.path(), &["registry.example".to_owned()]).unwrap();
        assert_ne!(read(&other.certificate), certificate, "other names make another certificate");
        assert_eq!(read(other.ca.as_deref().unwrap()), ca, "by the same CA");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&other.key).unwrap().permissions().mode() & 0o777, 0o600);
    }

    /// A directory removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
