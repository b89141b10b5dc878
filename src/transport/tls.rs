//! TLS set-up: the server's certificate (the operator's PEM files, or a
//! self-signed one made on first start and kept beside the database), the
//! rustls configuration built from it, and the certificate's fingerprint.
//!
//! One crypto provider (ring) serves rustls and rcgen alike. Nothing here
//! touches a connection: the reactor drives `rustls::ServerConnection`s
//! through `transport::Transport`.

use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::owner_only;

/// The only ALPN protocol offered: a browser's connection speaks HTTP.
pub const ALPN_HTTP: &[u8] = b"http/1.1";

/// Where the certificate comes from.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// The operator's PEM files (`--tls-cert`, `--tls-key`).
    Files { cert: PathBuf, key: PathBuf },
    /// Self-signed, made on first start and kept beside the database
    /// (`<db>.cert.pem`, `<db>.key.pem`), then reused.
    SelfSigned {
        /// Extra names besides localhost, the loopback addresses and the
        /// host name (`--tls-name`).
        names: Vec<String>,
    },
}

impl CertSource {
    /// The certificate and key files for a server whose database is `db`.
    pub fn paths(&self, db: &Path) -> (PathBuf, PathBuf) {
        match self {
            CertSource::Files { cert, key } => (cert.clone(), key.clone()),
            CertSource::SelfSigned { .. } => self_signed_paths(db),
        }
    }
}

/// The paths of the self-signed certificate and key kept for `db`.
pub fn self_signed_paths(db: &Path) -> (PathBuf, PathBuf) {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    (with(".cert.pem"), with(".key.pem"))
}

/// Why the certificate could not be loaded or made.
#[derive(Debug)]
pub struct TlsError {
    what: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for TlsError {}

fn err(what: impl Into<String>) -> TlsError {
    TlsError { what: what.into() }
}

/// A loaded certificate, ready for connections.
pub struct Loaded {
    pub config: Arc<ServerConfig>,
    pub fingerprint: String,
    /// Set when the certificate was made just now.
    pub created: bool,
}

/// Loads (or, for the self-signed default, makes once) the certificate of
/// the server whose database is `db`, and builds the rustls configuration.
pub fn load(source: &CertSource, db: &Path) -> Result<Loaded, TlsError> {
    let (cert_path, key_path) = source.paths(db);
    let (cert_path, key_path) = (&cert_path, &key_path);
    let mut created = false;
    if let CertSource::SelfSigned { names } = source {
        if cert_path.exists() {
            // Ours, so ours to keep private, whoever loosened it (an older
            // version, a copy, a restore from backup). The operator's own
            // files (`--tls-cert`, `--tls-key`) are left as they are.
            owner_only::tighten_logged(key_path, "TLS key");
        } else {
            make_self_signed(cert_path, key_path, names)?;
            created = true;
        }
    }
    let certs = read_certs(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| err(format!("cannot read the key {}: {e}", key_path.display())))?;
    let fingerprint = fingerprint(&certs[0]);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(format!("TLS set-up: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            err(format!(
                "the certificate {} and key {} do not go together: {e}",
                cert_path.display(),
                key_path.display()
            ))
        })?;
    config.alpn_protocols = vec![ALPN_HTTP.to_vec()];
    // Stateless session tickets (encrypted under a key that rotates every
    // six hours, kept in memory only): a browser's later connections, and
    // a client coming back within hours, resume without the certificate
    // and its signature, and the server keeps nothing per session. The
    // default, a cache of 256 sessions, would hold none of a thousand
    // browsers arriving at once.
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| err(format!("TLS session tickets: {e}")))?;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Loaded {
        config: Arc::new(config),
        fingerprint,
        created,
    })
}

/// The crypto provider used for everything.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The handshake signature checks a client's certificate verifier must make
/// whatever it decides about the certificate itself (by a pin, as the
/// terminal client does, or not at all, as the load generator does): they
/// prove the server holds the certificate's key.
#[derive(Debug, Clone)]
pub struct Signatures(Arc<rustls::crypto::CryptoProvider>);

impl Signatures {
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> Signatures {
        Signatures(provider)
    }

    pub fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    pub fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    pub fn schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            err(format!(
                "cannot read the certificate {}: {e}",
                path.display()
            ))
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("bad certificate file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(err(format!("no certificate in {}", path.display())));
    }
    Ok(certs)
}

/// The fingerprint of the certificate in a PEM file (its first one).
pub fn file_fingerprint(path: &Path) -> Result<String, TlsError> {
    Ok(fingerprint(&read_certs(path)?[0]))
}

/// `SHA256:` and the unpadded base64 of the SHA-256 of the DER, as OpenSSH
/// prints keys.
pub fn fingerprint(cert: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_ref())
    )
}

/// The names a self-signed certificate is made for.
pub fn default_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(host) = host_name()
        && !names.contains(&host)
    {
        names.push(host);
    }
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid and writable for its whole length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

fn make_self_signed(cert: &Path, key: &Path, extra: &[String]) -> Result<(), TlsError> {
    let names = default_names(extra);
    let made = rcgen::generate_simple_self_signed(names.clone())
        .map_err(|e| err(format!("cannot make a certificate for {names:?}: {e}")))?;
    // The key first, owner-only from its creation: never readable by others,
    // not even for a moment, whatever the umask.
    write_new(
        key,
        made.signing_key.serialize_pem().as_bytes(),
        owner_only::MODE,
    )?;
    write_new(cert, made.cert.pem().as_bytes(), owner_only::MODE)?;
    log::info!(
        "made a self-signed certificate for {} ({})",
        names.join(", "),
        cert.display()
    );
    Ok(())
}

/// Writes a file through a temporary one and a rename, created with `mode`
/// (and set to it after, so the umask takes nothing away).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| err(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_owner_only_and_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("chat.db");
        let source = CertSource::SelfSigned {
            names: vec!["chat.example.org".into()],
        };
        let first = load(&source, &db).expect("made");
        assert!(first.created);
        let (cert, key) = self_signed_paths(&db);
        for path in [&cert, &key] {
            let mode = std::fs::metadata(path)
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        let again = load(&source, &db).expect("reused");
        assert!(!again.created);
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(file_fingerprint(&cert).expect("read"), first.fingerprint);
        assert!(first.fingerprint.starts_with("SHA256:"));
        assert_eq!(first.fingerprint.len(), "SHA256:".len() + 43);
    }

    /// A self-signed key found open to others (copied, restored, made by
    /// an older version) is made owner-only again when it is loaded.
    #[test]
    fn an_existing_self_signed_key_open_to_others_is_tightened() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("chat.db");
        let source = CertSource::SelfSigned { names: vec![] };
        let first = load(&source, &db).expect("made");
        let (_, key) = self_signed_paths(&db);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let again = load(&source, &db).expect("reused");
        assert_eq!(first.fingerprint, again.fingerprint);
        let mode = std::fs::metadata(&key)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_broken_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, "not a certificate").expect("write");
        std::fs::write(&key, "not a key").expect("write");
        let e = load(&CertSource::Files { cert, key }, &dir.path().join("db"))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("c.pem"), "{e}");
    }

    #[test]
    fn names_cover_loopback_and_extras() {
        let names = default_names(&["chat.example.org".into()]);
        for n in ["localhost", "127.0.0.1", "::1", "chat.example.org"] {
            assert!(names.iter().any(|x| x == n), "{names:?}");
        }
    }
}
