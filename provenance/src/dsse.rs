//! DSSE v1 (Dead Simple Signing Envelope): the envelope the provenance travels in, signed over the
//! pre-authentication encoding (PAE) of its payload type and payload, exactly as the specification
//! (secure-systems-lab/dsse, `protocol.md`) defines it:
//!
//! ```text
//! PAE(type, body) = "DSSEv1" + SP + LEN(type) + SP + type + SP + LEN(body) + SP + body
//! ```
//!
//! where `LEN` is the length in bytes as ASCII decimal without leading zeros, and `type` is UTF-8.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::key::{PublicKey, SigningKey};
use crate::statement::Statement;

/// The payload type of an in-toto Statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// The media type of a DSSE envelope (as a file, an HTTP answer or an OCI layer).
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";

/// DSSE's pre-authentication encoding of `payload` of type `payload_type`: the bytes that are signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let type_len = payload_type.len().to_string();
    let body_len = payload.len().to_string();
    let mut out = Vec::with_capacity(10 + type_len.len() + payload_type.len() + body_len.len() + payload.len());
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(type_len.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body_len.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope, as JSON: `{payloadType, payload, signatures:[{keyid, sig}]}`, with `payload` and `sig`
/// in standard base64 (with padding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload_type: String,
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Which key signed (see [`PublicKey::keyid`]); DSSE lets it be empty or absent.
    #[serde(default)]
    pub keyid: String,
    pub sig: String,
}

/// What a verified envelope holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub payload_type: String,
    pub payload: Vec<u8>,
    /// The id of the key whose signature verified.
    pub keyid: String,
}

/// Which check of an envelope failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the envelope is not DSSE JSON: {0}")]
    Json(String),
    #[error("the public key: {0}")]
    PublicKey(String),
    #[error("the envelope's payload is not base64: {0}")]
    PayloadEncoding(String),
    #[error("the envelope has no signature")]
    NoSignatures,
    #[error("no signature is by key {expected} (the envelope's are by {})", if found.is_empty() { "keys it does not name".to_owned() } else { found.join(", ") })]
    OtherKey { expected: String, found: Vec<String> },
    #[error("the signature by key {keyid} does not verify: the envelope was changed after signing, or signed by another key")]
    BadSignature { keyid: String },
    #[error("the payload type is {found:?}, not {expected:?}")]
    PayloadType { expected: String, found: String },
    #[error("the payload is not an in-toto Statement: {0}")]
    Statement(String),
    #[error("the statement's {field} is {found:?}, not {expected:?}")]
    StatementType { field: &'static str, expected: String, found: String },
}

impl Envelope {
    /// Signs `payload` of type `payload_type` with `key`.
    pub fn sign(key: &SigningKey, payload_type: &str, payload: &[u8]) -> Self {
        let sig = key.sign(&pae(payload_type, payload));
        Self {
            payload_type: payload_type.to_owned(),
            payload: base64::engine::general_purpose::STANDARD.encode(payload),
            signatures: vec![EnvelopeSignature {
                keyid: key.keyid().to_owned(),
                sig: base64::engine::general_purpose::STANDARD.encode(sig),
            }],
        }
    }

    /// Signs `statement` (serialized as compact JSON) as an in-toto payload.
    pub fn sign_statement(key: &SigningKey, statement: &Statement) -> Self {
        let payload = serde_json::to_vec(statement).expect("a statement always serializes");
        Self::sign(key, IN_TOTO_PAYLOAD_TYPE, &payload)
    }

    /// The envelope in its JSON text.
    pub fn from_json(json: &[u8]) -> Result<Self, VerifyError> {
        serde_json::from_slice(json).map_err(|err| VerifyError::Json(err.to_string()))
    }

    /// The envelope as compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }

    /// The payload's bytes, unverified. DSSE allows standard or URL-safe base64, padded or not.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, VerifyError> {
        decode_base64(&self.payload).map_err(VerifyError::PayloadEncoding)
    }

    /// Checks that `key` signed this envelope: a signature that names the key's id (or names none) must
    /// verify over the PAE of the payload type and payload. Signatures naming other keys are passed over, as
    /// DSSE's verifier does; if no signature could be by `key`, [`VerifyError::OtherKey`].
    pub fn verify(&self, key: &PublicKey) -> Result<Verified, VerifyError> {
        let payload = self.payload_bytes()?;
        if self.signatures.is_empty() {
            return Err(VerifyError::NoSignatures);
        }
        let message = pae(&self.payload_type, &payload);
        let mut tried = false;
        for signature in &self.signatures {
            if !signature.keyid.is_empty() && signature.keyid != key.keyid() {
                continue;
            }
            tried = true;
            let Ok(sig) = decode_base64(&signature.sig) else { continue };
            if key.verifies(&message, &sig) {
                return Ok(Verified {
                    payload_type: self.payload_type.clone(),
                    payload,
                    keyid: key.keyid().to_owned(),
                });
            }
        }
        if tried {
            Err(VerifyError::BadSignature { keyid: key.keyid().to_owned() })
        } else {
            Err(VerifyError::OtherKey {
                expected: key.keyid().to_owned(),
                found: self.signatures.iter().map(|signature| signature.keyid.clone()).collect(),
            })
        }
    }

    /// [`Self::verify`] with the key in SPKI PEM (as `GET /provenance/key` answers `publicKeyPem`).
    pub fn verify_pem(&self, public_key_pem: &str) -> Result<Verified, VerifyError> {
        let key = PublicKey::from_pem(public_key_pem).map_err(|err| VerifyError::PublicKey(err.to_string()))?;
        self.verify(&key)
    }

    /// Verifies the envelope with `key` and reads its payload as an in-toto Statement v1 with a SLSA
    /// provenance v1 predicate (checking the payload type, `_type` and `predicateType`).
    pub fn verify_statement(&self, key: &PublicKey) -> Result<Statement, VerifyError> {
        let verified = self.verify(key)?;
        if verified.payload_type != IN_TOTO_PAYLOAD_TYPE {
            return Err(VerifyError::PayloadType {
                expected: IN_TOTO_PAYLOAD_TYPE.to_owned(),
                found: verified.payload_type,
            });
        }
        Statement::from_json(&verified.payload)
    }
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    let engines = [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD];
    let mut first_error = None;
    for engine in engines {
        match engine.decode(text) {
            Ok(bytes) => return Ok(bytes),
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    Err(first_error.map(|err| err.to_string()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of DSSE's `protocol.md` ("Test Vectors"): type `http://example.com/HelloWorld`, body
    /// `hello world`.
    #[test]
    fn pae_of_the_specifications_example() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
        // Lengths count bytes, not characters.
        assert_eq!(pae("t\u{e9}", "\u{1f600}".as_bytes()), "DSSEv1 3 t\u{e9} 4 \u{1f600}".as_bytes().to_vec());
    }

    #[test]
    fn signs_and_verifies() {
        let key = SigningKey::generate();
        let envelope = Envelope::sign(&key, IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1}");
        let json = String::from_utf8(envelope.to_json()).unwrap();
        assert!(json.starts_with("{\"payloadType\":\"application/vnd.in-toto+json\",\"payload\":\"eyJhIjoxfQ==\",\"signatures\":[{\"keyid\":\""), "{json}");
        let back = Envelope::from_json(json.as_bytes()).unwrap();
        let verified = back.verify_pem(key.public_key_pem()).unwrap();
        assert_eq!(verified.payload, b"{\"a\":1}");
        assert_eq!(verified.keyid, key.keyid());
        // The signature is over the PAE: the raw payload alone does not verify.
        let sig = decode_base64(&envelope.signatures[0].sig).unwrap();
        assert!(key.public_key().verifies(&pae(IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1}"), &sig));
        assert!(!key.public_key().verifies(b"{\"a\":1}", &sig));
    }

    #[test]
    fn tampering_is_caught() {
        let key = SigningKey::generate();
        let envelope = Envelope::sign(&key, IN_TOTO_PAYLOAD_TYPE, b"{\"commit\":\"abc\"}");

        let mut changed = envelope.clone();
        changed.payload = base64::engine::general_purpose::STANDARD.encode(b"{\"commit\":\"abd\"}");
        assert_eq!(changed.verify(key.public_key()), Err(VerifyError::BadSignature { keyid: key.keyid().into() }));

        let mut retyped = envelope.clone();
        retyped.payload_type = "application/json".into();
        assert!(matches!(retyped.verify(key.public_key()), Err(VerifyError::BadSignature { .. })));

        // Signed by another key that says who it is.
        let other = SigningKey::generate();
        let resigned = Envelope::sign(&other, IN_TOTO_PAYLOAD_TYPE, b"{\"commit\":\"abc\"}");
        assert_eq!(
            resigned.verify(key.public_key()),
            Err(VerifyError::OtherKey { expected: key.keyid().into(), found: vec![other.keyid().into()] })
        );
        // Signed by another key that claims to be ours.
        let mut forged = resigned.clone();
        forged.signatures[0].keyid = key.keyid().into();
        assert!(matches!(forged.verify(key.public_key()), Err(VerifyError::BadSignature { .. })));
        // Or names no key.
        forged.signatures[0].keyid = String::new();
        assert!(matches!(forged.verify(key.public_key()), Err(VerifyError::BadSignature { .. })));

        let mut unsigned = envelope.clone();
        unsigned.signatures.clear();
        assert_eq!(unsigned.verify(key.public_key()), Err(VerifyError::NoSignatures));

        let mut garbled = envelope.clone();
        garbled.payload = "%%%".into();
        assert!(matches!(garbled.verify(key.public_key()), Err(VerifyError::PayloadEncoding(_))));

        assert!(matches!(
            envelope.verify_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
            Err(VerifyError::PublicKey(_))
        ));
    }

    #[test]
    fn another_signature_beside_ours_is_passed_over() {
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let mut envelope = Envelope::sign(&key, IN_TOTO_PAYLOAD_TYPE, b"x");
        envelope.signatures.insert(0, Envelope::sign(&other, IN_TOTO_PAYLOAD_TYPE, b"x").signatures[0].clone());
        assert!(envelope.verify(key.public_key()).is_ok());
        assert!(envelope.verify(other.public_key()).is_ok());
    }

    #[test]
    fn url_safe_and_unpadded_base64_are_read() {
        let key = SigningKey::generate();
        let payload = [0xfb_u8, 0xff, 0xfe, 0x01];
        let mut envelope = Envelope::sign(&key, "application/octet-stream", &payload);
        assert_eq!(envelope.payload, "+//+AQ==");
        envelope.payload = "-__-AQ".into();
        assert_eq!(envelope.verify(key.public_key()).unwrap().payload, payload);
    }
}
