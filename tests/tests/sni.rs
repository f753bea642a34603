//! Certificate selection by SNI on a TLS listener with `a.test`, `b.test` and `*.w.test`:
//! each name gets its own certificate (exact names, case-insensitively; the wildcard covers
//! one label only), no SNI or an unknown name gets the default certificate (the first, or
//! `default_certificate`), and only TLS 1.2 and 1.3 are spoken: a TLS 1.2-only client works,
//! a TLS 1.0 or 1.1 ClientHello is refused with a `protocol_version` alert.
//!
//! Certificates are compared by DER with a client that accepts whatever it is shown, so the
//! test sees exactly which certificate was picked, not merely that one verified.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, ProtocolVersion, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sluice_tests::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Accepts any certificate (signatures are still checked), so the test can look at it.
#[derive(Debug)]
struct ShowMeAnything(Arc<CryptoProvider>);

impl ServerCertVerifier for ShowMeAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        msg: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(msg, cert, dss, algs)
    }
    fn verify_tls13_signature(
        &self,
        msg: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(msg, cert, dss, algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn inspecting_client(sni: bool) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ShowMeAnything(provider)))
        .with_no_client_auth();
    cfg.enable_sni = sni;
    Arc::new(cfg)
}

/// The certificate presented for SNI `name`, or for no SNI at all.
async fn presented(addr: SocketAddr, name: Option<&str>) -> Vec<u8> {
    let cfg = inspecting_client(name.is_some());
    let tls = tls_connect(addr, name.unwrap_or("no-sni.invalid"), cfg)
        .await
        .unwrap();
    peer_cert(&tls)
}

struct Site {
    _certs: Certs,
    a: Leaf,
    b: Leaf,
    w: Leaf,
}

fn site() -> Site {
    let certs = Certs::new();
    let a = certs.issue("a", &["a.test"]);
    let b = certs.issue("b", &["b.test"]);
    let w = certs.issue("w", &["*.w.test"]);
    Site {
        _certs: certs,
        a,
        b,
        w,
    }
}

#[tokio::test]
async fn each_server_name_gets_its_certificate() {
    let origin = Origin::echo("a").await;
    let s = site();
    let proxy = ProxyBuilder::for_origin(&origin)
        .tls(&[&s.a, &s.b, &s.w])
        .start()
        .await;
    let addr = proxy.https.unwrap();
    let cases = [
        ("a.test", &s.a, "exact"),
        ("b.test", &s.b, "exact"),
        ("B.Test", &s.b, "exact, other case"),
        ("x.w.test", &s.w, "wildcard"),
        (
            "w.test",
            &s.a,
            "wildcard does not cover its parent: default",
        ),
        ("deep.x.w.test", &s.a, "wildcard covers one label: default"),
        ("unknown.test", &s.a, "unknown name: default"),
    ];
    for (name, leaf, why) in cases {
        assert!(
            presented(addr, Some(name)).await == leaf.der(),
            "{name}: {why}"
        );
    }
    assert!(presented(addr, None).await == s.a.der(), "no SNI: default");
}

#[tokio::test]
async fn default_certificate_setting_picks_the_fallback() {
    let origin = Origin::echo("a").await;
    let s = site();
    let listener = format!(
        "[[listener]]\nname = \"https\"\naddress = \"127.0.0.1:0\"\n\
         tls = {{ default_certificate = 1, certificates = [\
         {{ cert = \"{}\", key = \"{}\" }}, {{ cert = \"{}\", key = \"{}\" }}] }}",
        s.a.cert.display(),
        s.a.key.display(),
        s.b.cert.display(),
        s.b.key.display()
    );
    let proxy = ProxyBuilder::for_origin(&origin)
        .toml(&listener)
        .start()
        .await;
    let addr = proxy.https.unwrap();
    assert!(presented(addr, Some("a.test")).await == s.a.der());
    assert!(presented(addr, Some("unknown.test")).await == s.b.der());
    assert!(presented(addr, None).await == s.b.der());
}

#[tokio::test]
async fn only_tls_12_and_13_are_spoken() {
    let fixture = TlsSite::start("a.test").await;
    let addr = fixture.https();

    let modern = fixture.connect(&[]).await;
    assert_eq!(
        modern.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );

    // A verifying client that can only speak TLS 1.2 completes a request.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls12 = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(fixture.certs.roots())
        .with_no_client_auth();
    let old = tls_connect(addr, "a.test", Arc::new(tls12)).await.unwrap();
    assert_eq!(
        old.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
    let resp = send(&mut h1_over(old).await, get("/", "a.test")).await;
    assert_eq!(resp.status(), 200);

    // Hand-made ClientHellos: the same hello is answered with a ServerHello when it says
    // TLS 1.2, and refused with a fatal protocol_version alert when it says 1.0 or 1.1.
    let (kind, payload) = first_record(addr, 0x0303).await;
    assert_eq!(kind, 0x16, "TLS 1.2 hello: expected a handshake record");
    assert_eq!(
        (payload[0], &payload[4..6]),
        (2, &[3u8, 3][..]),
        "ServerHello, 1.2"
    );
    for version in [0x0301, 0x0302] {
        let (kind, payload) = first_record(addr, version).await;
        assert_eq!(
            (kind, payload),
            (0x15, vec![2, 70]),
            "version {version:#06x}"
        );
    }
}

/// Sends a minimal ClientHello announcing `version` (no supported_versions extension) and
/// returns the content type and payload of the first record the server sends back.
async fn first_record(addr: SocketAddr, version: u16) -> (u8, Vec<u8>) {
    fn vec16(v: &[u8]) -> Vec<u8> {
        [&(v.len() as u16).to_be_bytes()[..], v].concat()
    }
    fn ext(kind: u16, data: &[u8]) -> Vec<u8> {
        [&kind.to_be_bytes()[..], &vec16(data)].concat()
    }
    let sni = vec16(&[&[0u8][..], &vec16(b"a.test")].concat());
    let extensions = [
        ext(0x0000, &sni),
        ext(0x000a, &vec16(&[0x00, 0x1d, 0x00, 0x17])), // groups: x25519, secp256r1
        ext(0x000b, &[1, 0]),                           // ec point formats: uncompressed
        ext(0x000d, &vec16(&[0x04, 0x03, 0x08, 0x04])), // ecdsa_p256_sha256, rsa_pss_sha256
    ]
    .concat();
    // ECDHE-ECDSA/RSA with AES-128-GCM, then two CBC suites only old versions would pick.
    let suites = vec16(&[0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x13, 0x00, 0x2f]);
    let hello = [
        &version.to_be_bytes()[..],
        &[7u8; 32], // random
        &[0],       // empty session id
        &suites,
        &[1, 0], // compression: null
        &vec16(&extensions),
    ]
    .concat();
    let handshake = [&[1u8][..], &(hello.len() as u32).to_be_bytes()[1..], &hello].concat();
    let record = [&[0x16u8, 3, 1][..], &vec16(&handshake)].concat();

    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&record).await.unwrap();
    let read = async {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).await.unwrap();
        let mut payload = vec![0u8; u16::from_be_bytes([head[3], head[4]]) as usize];
        s.read_exact(&mut payload).await.unwrap();
        (head[0], payload)
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server answers a ClientHello")
}
