//! A TLS handshake with the origin's own listener, and what its certificate means for
//! Cloudflare: expiry, the name, and whether public roots trust it ("Full (strict)") or only
//! Cloudflare's "Full" mode would accept it.
//!
//! The handshake accepts any certificate, so that it completes whatever is wrong and every
//! fault can be named; each property is then judged on its own: the dates and names with
//! `x509-parser`, the name match and the chain with rustls's webpki functions against
//! `webpki-roots` (Mozilla's roots, the same ureq uses). The chain is judged at a moment
//! inside the certificate's validity, so an expired certificate is reported as expired, not
//! also as untrusted.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How long to wait for the origin's listener to connect and answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What was learnt from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The subject, as text.
    pub subject: String,
    /// The issuer, as text.
    pub issuer: String,
    /// The DNS names it is for (subjectAltName, else the common name).
    pub names: Vec<String>,
    /// Valid from (seconds since the epoch).
    pub not_before: i64,
    /// Valid until (seconds since the epoch).
    pub not_after: i64,
    /// Issuer and subject are the same: nobody but the key's owner vouches for it.
    pub self_signed: bool,
    /// Whether it is valid for the name asked for; the reason when not.
    pub name_error: Option<String>,
    /// Whether a chain to a public root was found; the reason when not.
    pub trust_error: Option<String>,
}

/// Why a handshake did not yield a certificate.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No TCP connection.
    #[error("could not connect to {address}")]
    Connect {
        /// Where.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The handshake failed.
    #[error("TLS handshake with {address} failed")]
    Handshake {
        /// Where.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The name is not a valid SNI name.
    #[error("{0:?} is not a valid server name")]
    Name(String),
    /// The server sent no certificate, or one that does not parse.
    #[error("the certificate from {address} cannot be read: {reason}")]
    Certificate {
        /// Where.
        address: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Records the certificates the server presents and accepts them: the judging happens after
/// the handshake, property by property. Signatures are still verified, so the peer holds the
/// key of the certificate it sent.
#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<CertificateDer<'static>>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = self
            .chain
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        chain.clear();
        chain.push(end_entity.clone().into_owned());
        chain.extend(intermediates.iter().map(|cert| cert.clone().into_owned()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    // ring: the provider ureq already brings (one provider in the build, not two).
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Connects to `address`, handshakes with `server_name` as SNI, and judges the certificate
/// presented for that name at `now`.
pub fn probe(address: SocketAddr, server_name: &str) -> Result<Certificate, ProbeError> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| ProbeError::Name(server_name.to_owned()))?;
    let provider = provider();
    let recorder = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
        algorithms: provider.signature_verification_algorithms,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let handshake_error = |source| ProbeError::Handshake { address, source };
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT)
        .map_err(|source| ProbeError::Connect { address, source })?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(handshake_error)?;
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name.clone())
        .map_err(|error| handshake_error(std::io::Error::other(error)))?;
    while connection.is_handshaking() {
        connection
            .complete_io(&mut stream)
            .map_err(handshake_error)?;
    }
    // Say goodbye properly; the answer does not matter.
    connection.send_close_notify();
    let _ = connection.complete_io(&mut stream);
    let _ = stream.flush();
    let mut rest = [0u8; 1];
    let _ = stream.read(&mut rest);
    let chain = recorder
        .chain
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone();
    judge(&chain, &name, SystemTime::now())
        .map_err(|reason| ProbeError::Certificate { address, reason })
}

/// Judges `chain` (end entity first) for `name` at `now`.
pub fn judge(
    chain: &[CertificateDer<'_>],
    name: &ServerName<'_>,
    now: SystemTime,
) -> Result<Certificate, String> {
    let end_entity = chain.first().ok_or("the server sent no certificate")?;
    let (_, parsed) = x509_parser::parse_x509_certificate(end_entity.as_ref())
        .map_err(|error| error.to_string())?;
    let validity = parsed.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    let mut names: Vec<String> = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|general| match general {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            parsed
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_owned)),
        );
    }
    let self_signed = parsed.subject().as_raw() == parsed.issuer().as_raw();
    let webpki_cert = rustls::server::ParsedCertificate::try_from(end_entity)
        .map_err(|error| error.to_string())?;
    let name_error = rustls::client::verify_server_name(&webpki_cert, name)
        .err()
        .map(|error| error.to_string());
    // The chain is judged inside the validity period: expiry is reported on its own.
    let now_seconds = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    let moment = now_seconds.clamp(not_before, not_after.max(not_before));
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let trust_error = rustls::client::verify_server_cert_signed_by_trust_anchor(
        &webpki_cert,
        &roots,
        &chain[1..],
        UnixTime::since_unix_epoch(Duration::from_secs(moment.max(0) as u64)),
        provider().signature_verification_algorithms.all,
    )
    .err()
    .map(|error| error.to_string());
    Ok(Certificate {
        subject: parsed.subject().to_string(),
        issuer: parsed.issuer().to_string(),
        names,
        not_before,
        not_after,
        self_signed,
        name_error,
        trust_error,
    })
}
