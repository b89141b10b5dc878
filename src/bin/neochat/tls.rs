//! The TLS handshake, and what it learnt about the server's certificate.
//!
//! Owns the rustls client configuration (ring provider, no ALPN for the
//! chat and `http/1.1` for a file transfer's own connection, no session
//! resumption), the certificate verifier, and running the handshake on a
//! blocking socket. The verifier first asks rustls's WebPki verifier with
//! the system's roots (rustls-native-certs, host name checked). When that
//! fails it does not fail the handshake: it records the leaf certificate
//! and lets the handshake finish (handshake signatures are still checked
//! against that certificate's key), so that `trust.rs` can decide with the
//! pins after the handshake and before a single byte of chat is sent.
//! Deciding is not done here, and neither is reading or writing chat data
//! (`conn.rs`).

use std::io;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neochat::transport::tls::Signatures;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme,
};

use crate::known::Fingerprint;

/// How long the handshake may take before the client gives up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handshake showed about the server's certificate.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The leaf certificate's fingerprint.
    pub fingerprint: Fingerprint,
    /// `None` when it chains to a system root for the host name; otherwise
    /// why not, in words for the user.
    pub untrusted: Option<String>,
}

/// The verifier: system roots first, else record and accept provisionally.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    signatures: Signatures,
    seen: Mutex<Option<Seen>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let untrusted = match &self.webpki {
            Some(webpki) => webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .err()
                .map(|e| why_untrusted(&e, server_name)),
            None => Some("this system has no certificate authorities installed".to_owned()),
        };
        let seen = Seen {
            fingerprint: Fingerprint::of_der(end_entity.as_ref()),
            untrusted,
        };
        match self.seen.lock() {
            Ok(mut slot) => *slot = Some(seen),
            Err(_) => return Err(rustls::Error::General("verifier state lost".into())),
        }
        // Provisional: `trust.rs` decides before anything is sent.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

/// Why the system roots do not vouch for a certificate, in plain words.
fn why_untrusted(e: &rustls::Error, name: &ServerName<'_>) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                "it is not signed by a certificate authority this system trusts \
                 (a self-signed certificate, for example)"
                    .to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("it is not valid for the name {}", name.to_str())
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "it has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "it is not valid yet".to_owned()
            }
            CertificateError::Revoked => "it has been revoked".to_owned(),
            CertificateError::Other(detail) => {
                format!("no certificate authority this system trusts vouches for it ({detail})")
            }
            other => {
                format!("no certificate authority this system trusts vouches for it ({other:?})")
            }
        },
        other => format!("no certificate authority this system trusts vouches for it ({other})"),
    }
}

/// A TLS connection whose handshake is done, not yet trusted.
pub struct Handshaken {
    pub tls: ClientConnection,
    pub sock: TcpStream,
    pub seen: Seen,
}

/// A TLS client set up for one server, before connecting: loading the
/// system's roots takes tens of milliseconds (more on a small board), and
/// a server that waits a moment for a silent client to speak first must
/// not see that delay between the connection and the ClientHello.
pub struct Prepared {
    tls: ClientConnection,
    verifier: Arc<Verifier>,
}

/// Sets up a TLS client for `host` (the name or address the user typed,
/// without the port), offering the ALPN protocols `alpn` (`http/1.1` for a
/// file transfer, so the server speaks HTTP at once; none for the chat).
/// The error is one phrase for the user.
pub fn prepare(host: &str, alpn: &[&[u8]]) -> Result<Prepared, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Verifier {
        webpki: system_verifier(&provider),
        signatures: Signatures::new(provider.clone()),
        seen: Mutex::new(None),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    // A resumed session skips certificate verification, and with it the
    // pin check; one connection per run gains nothing from it anyway.
    config.resumption = Resumption::disabled();
    // No ALPN for the chat: the server takes `http/1.1` for a browser.
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();

    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let name = ServerName::try_from(bare.to_owned())
        .map_err(|_| format!("`{host}` is not a name a certificate can be checked for"))?;
    let tls = ClientConnection::new(Arc::new(config), name)
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    Ok(Prepared { tls, verifier })
}

/// Runs the handshake [`prepare`]d on `sock`, a fresh connection to the
/// server. The error is one phrase for the user.
pub fn handshake(prepared: Prepared, mut sock: TcpStream) -> Result<Handshaken, String> {
    let Prepared { mut tls, verifier } = prepared;
    set_timeouts(&sock, Some(HANDSHAKE_TIMEOUT))?;
    while tls.is_handshaking() {
        if let Err(e) = tls.complete_io(&mut sock) {
            return Err(handshake_error(&e));
        }
    }
    set_timeouts(&sock, None)?;

    let seen = match verifier.seen.lock() {
        Ok(slot) => slot.clone(),
        Err(_) => None,
    };
    let seen = seen.ok_or("the server showed no certificate")?;
    Ok(Handshaken { tls, sock, seen })
}

fn set_timeouts(sock: &TcpStream, t: Option<Duration>) -> Result<(), String> {
    sock.set_read_timeout(t)
        .and_then(|()| sock.set_write_timeout(t))
        .map_err(|e| crate::wire::describe(&e))
}

/// The system's roots as a WebPki verifier; `None` when there are none
/// (then every certificate goes to the pins).
fn system_verifier(provider: &Arc<CryptoProvider>) -> Option<Arc<WebPkiServerVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable or unparsable system certificates are skipped: the ones
    // that load still count.
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return None;
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .ok()
}

/// A failed handshake as one phrase.
fn handshake_error(e: &io::Error) -> String {
    if let Some(tls) = tls_error(e) {
        let hint = match tls {
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                " (is it a TLS server? --plain connects without TLS)"
            }
            _ => "",
        };
        return format!("{tls}{hint}");
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the handshake".to_owned()
        }
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("no answer within {} s", HANDSHAKE_TIMEOUT.as_secs())
        }
        _ => crate::wire::describe(e),
    }
}

/// The rustls error inside an I/O error, if that is what it is.
pub fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}
