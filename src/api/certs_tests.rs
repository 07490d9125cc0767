use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::api::tls::{ClientFiles, TcpConfig, client_config, server_config};

/// A fresh folder of this test process.
fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ferrite-certs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const NODE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10));

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Server and client configs from files issued by `server_ca` (server) and `client_ca`
/// (client), both trusting `ca_of_the_other` as rustls does with real files.
fn configs(
    dir: &Path,
    server_ca: &CaPem,
    client_ca: &CaPem,
) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let server = issue(server_ca, "node1", &[NODE_IP, NODE_IP], Usage::Server).unwrap();
    let client = issue(client_ca, "operator", &[], Usage::Client).unwrap();
    let tcp = TcpConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: write(dir, "tls.crt", &server.cert),
        key: write(dir, "tls.key", &server.key),
        client_ca: write(dir, "server-trusts.crt", &server_ca.cert),
    };
    let files = ClientFiles {
        cert: write(dir, "client.crt", &client.cert),
        key: write(dir, "client.key", &client.key),
        ca: write(dir, "client-trusts.crt", &client_ca.cert),
    };
    (server_config(&tcp).unwrap(), client_config(&files).unwrap())
}

/// A TLS handshake in memory, the client dialling `ip`.
fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    ip: IpAddr,
) -> Result<(), rustls::Error> {
    let name = rustls::pki_types::ServerName::IpAddress(ip.into());
    let mut c = rustls::ClientConnection::new(client, name)?;
    let mut s = rustls::ServerConnection::new(server)?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets()?;
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets()?;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
    }
    Err(rustls::Error::General("handshake did not finish".into()))
}

#[test]
fn certificates_from_one_ca_complete_a_mutual_handshake_by_address() {
    let dir = tempdir("one");
    let ca = generate_ca().unwrap();
    let (server, client) = configs(&dir, &ca, &ca);
    handshake(server.clone(), client.clone(), NODE_IP).expect("same CA, dialled address");
    // Another address than the certificate names: the client refuses the server.
    let other = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 11));
    assert!(handshake(server, client, other).is_err());
    // The key never shows in Debug output.
    assert!(!format!("{ca:?}").contains("PRIVATE"));
}

#[test]
fn a_certificate_of_another_ca_is_refused_both_ways() {
    let dir = tempdir("rogue");
    let (ca, rogue) = (generate_ca().unwrap(), generate_ca().unwrap());
    let (server, client) = configs(&dir, &ca, &rogue);
    assert!(handshake(server, client, NODE_IP).is_err());
}

#[test]
fn a_ca_read_back_from_pem_issues_certificates_its_certificate_verifies() {
    let dir = tempdir("again");
    let ca = generate_ca().unwrap();
    let again = CaPem::from_bundle(&ca.to_bundle()).unwrap();
    assert_eq!(again, ca);
    assert!(CaPem::from_bundle(&ca.cert).is_err(), "no key");
    assert!(CaPem::from_bundle(&ca.key).is_err(), "no certificate");
    let (server, client) = configs(&dir, &again, &ca);
    handshake(server, client, NODE_IP).expect("the CA read back is the same CA");
}
