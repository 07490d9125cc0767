//! Authentication of membership datagrams: HMAC-SHA256 over a cluster key, with replay
//! protection.
//!
//! ```text
//! sealed = "FL2A" version:u8 epoch:u64 seq:u64 packet mac:[u8; 32]
//! mac    = HMAC-SHA256(key, destination:sockaddr ‖ everything before the mac)
//! ```
//! `packet` is a [`super::wire`] datagram. The destination (the receiver's bound address) is
//! covered by the MAC, so a packet captured on its way to one member cannot be replayed to
//! another.
//!
//! # Replay protection: per-sender epoch + sequence with a window
//! Each agent process picks an `epoch` at start (its start time in ms, the same assumption the
//! SWIM incarnation already makes: a restarted agent's clock is later than its previous start)
//! and numbers every datagram it sends (`seq`, from 1, never reused within the epoch). A
//! receiver keeps, per sender name, the highest epoch seen, the highest sequence in it and a
//! 64-entry bitmap below that: a datagram of an older epoch, at or below the window, or already
//! in it is a replay and is dropped. A timestamp window would need synchronised clocks between
//! nodes (a Raspberry Pi without an RTC boots in 1970); epoch + sequence needs none, and the
//! 64-packet window tolerates the little reordering a LAN does. Only datagrams whose MAC
//! verified update the state, so forged packets cannot grow or poison it.
//!
//! `ring` (already linked through rustls) provides HMAC-SHA256 and the key generator: no new
//! code in the binary.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use ring::hmac;

use crate::l2::ownership::NodeName;

pub const MAGIC: [u8; 4] = *b"FL2A";
pub const VERSION: u8 = 1;
const TAG_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + 1 + 8 + 8;
/// Bytes the authentication adds to a datagram.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Bytes of a generated key (256 bits, the HMAC-SHA256 block-size-independent strength).
pub const KEY_BYTES: usize = 32;
/// Shortest key accepted from a file or a Secret.
pub const MIN_KEY_BYTES: usize = 16;
/// Width of the replay window in datagrams.
pub const WINDOW: u64 = 64;

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("not an authenticated ferrite membership datagram (bad magic or version)")]
    NotSealed,
    #[error("datagram too short for its authentication")]
    Truncated,
    #[error("authentication failed (another key, or altered in transit)")]
    BadMac,
    #[error("replayed datagram (epoch {epoch}, sequence {seq})")]
    Replay { epoch: u64, seq: u64 },
}

/// A problem with the key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no L2 membership key at {path}: every node needs the same key; create it once with \
         `ferrite l2 keygen > {path}` and copy that file to every node"
    )]
    Missing { path: String },
    #[error("reading the L2 membership key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the L2 membership key {path} must be hex of at least {MIN_KEY_BYTES} bytes \
         (`ferrite l2 keygen` writes one): {why}"
    )]
    Malformed { path: String, why: &'static str },
    #[error("generating a random key: the system random source failed")]
    Random,
}

/// The cluster key.
#[derive(Clone)]
pub struct Key {
    hmac: hmac::Key,
    /// First bytes of SHA-256(key), hex: tells which key a node uses without revealing it.
    fingerprint: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.fingerprint)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for Key {}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Result<Vec<u8>, &'static str> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return Err("odd number of hex digits");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or("not hex digits")
        })
        .collect()
}

impl Key {
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        Self {
            hmac: hmac::Key::new(hmac::HMAC_SHA256, bytes),
            fingerprint: hex(&digest.as_ref()[..8]),
        }
    }

    /// Parses the text form (hex, surrounding whitespace ignored); `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, KeyError> {
        let malformed = |why| KeyError::Malformed {
            path: origin.to_owned(),
            why,
        };
        let bytes = unhex(text).map_err(malformed)?;
        if bytes.len() < MIN_KEY_BYTES {
            return Err(malformed("too short"));
        }
        Ok(Self::from_bytes(&bytes))
    }

    /// Reads a key file; a missing file is [`KeyError::Missing`] with how to create one.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &shown),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(KeyError::Missing { path: shown })
            }
            Err(source) => Err(KeyError::Read {
                path: shown,
                source,
            }),
        }
    }

    /// A fresh random key in its text form (what `ferrite l2 keygen` prints).
    pub fn generate_text() -> Result<String, KeyError> {
        use ring::rand::SecureRandom as _;
        let mut bytes = [0_u8; KEY_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Random)?;
        Ok(hex(&bytes))
    }

    #[must_use]
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn tag(&self, dest: SocketAddr, covered: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.hmac);
        ctx.update(&dest_bytes(dest));
        ctx.update(covered);
        ctx.sign()
    }
}

fn dest_bytes(dest: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(19);
    match dest.ip() {
        std::net::IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        std::net::IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&dest.port().to_be_bytes());
    out
}

/// Wraps an encoded packet for `dest`.
#[must_use]
pub fn seal(key: &Key, dest: SocketAddr, epoch: u64, seq: u64, packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(OVERHEAD + packet.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(packet);
    let tag = key.tag(dest, &out);
    out.extend_from_slice(tag.as_ref());
    out
}

/// A datagram whose MAC verified (not yet checked for replay: that needs the sender's name,
/// which is inside `packet`).
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    pub epoch: u64,
    pub seq: u64,
    pub packet: &'a [u8],
}

/// Verifies a datagram received on `local` (this member's bound address).
pub fn open<'a>(key: &Key, local: SocketAddr, bytes: &'a [u8]) -> Result<Opened<'a>, AuthError> {
    if bytes.len() < MAGIC.len() + 1 || bytes[..4] != MAGIC || bytes[4] != VERSION {
        return Err(AuthError::NotSealed);
    }
    if bytes.len() < OVERHEAD {
        return Err(AuthError::Truncated);
    }
    let (covered, tag) = bytes.split_at(bytes.len() - TAG_LEN);
    // ring's verify compares in constant time.
    let mut msg = dest_bytes(local);
    msg.extend_from_slice(covered);
    hmac::verify(&key.hmac, &msg, tag).map_err(|_| AuthError::BadMac)?;
    let word = |at: usize| {
        let mut w = [0_u8; 8];
        w.copy_from_slice(&covered[at..at + 8]);
        u64::from_be_bytes(w)
    };
    Ok(Opened {
        epoch: word(5),
        seq: word(13),
        packet: &covered[HEADER_LEN..],
    })
}

/// One sender's replay state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    epoch: u64,
    /// Highest sequence accepted in `epoch`.
    top: u64,
    /// Bit `i` set: `top - i` was accepted (bit 0 is `top`).
    seen: u64,
}

/// Replay state of every sender heard from (only authenticated senders get an entry).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    senders: HashMap<NodeName, Window>,
}

impl ReplayGuard {
    /// Accepts `(epoch, seq)` from `sender` once; a repeat, an older epoch or a sequence
    /// below the window is a replay.
    pub fn check(&mut self, sender: &NodeName, epoch: u64, seq: u64) -> Result<(), AuthError> {
        let replay = Err(AuthError::Replay { epoch, seq });
        let Some(w) = self.senders.get_mut(sender) else {
            self.senders.insert(
                sender.clone(),
                Window {
                    epoch,
                    top: seq,
                    seen: 1,
                },
            );
            return Ok(());
        };
        if epoch < w.epoch {
            return replay;
        }
        if epoch > w.epoch {
            *w = Window {
                epoch,
                top: seq,
                seen: 1,
            };
            return Ok(());
        }
        if seq > w.top {
            let shift = seq - w.top;
            w.seen = if shift >= WINDOW { 0 } else { w.seen << shift } | 1;
            w.top = seq;
            return Ok(());
        }
        let back = w.top - seq;
        if back >= WINDOW || w.seen & (1 << back) != 0 {
            return replay;
        }
        w.seen |= 1 << back;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Key {
        Key::from_bytes(&[b; 32])
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sealed_datagrams_open_with_the_same_key_and_destination_only() {
        let k = key(1);
        let dest = addr("10.0.0.2:7946");
        let sealed = seal(&k, dest, 1_700_000_000_000, 42, b"FL2M payload");
        assert_eq!(sealed.len(), OVERHEAD + 12);
        let opened = open(&k, dest, &sealed).unwrap();
        assert_eq!(
            opened,
            Opened {
                epoch: 1_700_000_000_000,
                seq: 42,
                packet: b"FL2M payload"
            }
        );
        assert_eq!(open(&key(2), dest, &sealed), Err(AuthError::BadMac));
        // Captured on its way to 10.0.0.2, replayed to 10.0.0.3.
        assert_eq!(
            open(&k, addr("10.0.0.3:7946"), &sealed),
            Err(AuthError::BadMac)
        );
        assert_eq!(
            open(&k, addr("[fd00::2]:7946"), &sealed),
            Err(AuthError::BadMac)
        );
    }

    #[test]
    fn every_altered_byte_and_every_truncation_is_rejected() {
        let k = key(7);
        let dest = addr("10.0.0.2:7946");
        let sealed = seal(&k, dest, 5, 6, b"some packet bytes");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(open(&k, dest, &bad).is_err(), "flipped byte {i}");
        }
        for cut in 0..sealed.len() {
            assert!(open(&k, dest, &sealed[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            open(&k, dest, b"FL2M\x01 an old unauthenticated datagram"),
            Err(AuthError::NotSealed)
        );
    }

    #[test]
    fn replay_window_accepts_each_datagram_once() {
        let mut g = ReplayGuard::default();
        let a: NodeName = "a".into();
        let b: NodeName = "b".into();
        g.check(&a, 10, 1).unwrap();
        assert_eq!(
            g.check(&a, 10, 1),
            Err(AuthError::Replay { epoch: 10, seq: 1 })
        );
        // Another sender has its own window.
        g.check(&b, 10, 1).unwrap();
        // Reordering within the window is fine, once.
        g.check(&a, 10, 5).unwrap();
        g.check(&a, 10, 3).unwrap();
        assert!(g.check(&a, 10, 3).is_err());
        g.check(&a, 10, 2).unwrap();
        // Far ahead: everything at or below top - WINDOW is now too old.
        g.check(&a, 10, 5 + WINDOW).unwrap();
        assert!(g.check(&a, 10, 5).is_err());
        g.check(&a, 10, 6).unwrap();
        assert!(g.check(&a, 10, 6).is_err());
        // A restart (later epoch) starts a new window; the old process's datagrams are replays.
        g.check(&a, 11, 1).unwrap();
        assert!(g.check(&a, 10, 1000).is_err());
        g.check(&a, 11, 2).unwrap();
    }

    #[test]
    fn keys_parse_from_hex_and_errors_say_how_to_make_one() {
        let text = Key::generate_text().unwrap();
        assert_eq!(text.len(), 2 * KEY_BYTES);
        let k = Key::parse(&format!("  {text}\n"), "x").unwrap();
        assert_eq!(k, Key::parse(&text, "y").unwrap());
        assert_ne!(k, Key::parse(&Key::generate_text().unwrap(), "z").unwrap());
        assert_eq!(k.fingerprint().len(), 16);
        assert!(matches!(
            Key::parse("abcd", "f"),
            Err(KeyError::Malformed {
                why: "too short",
                ..
            })
        ));
        assert!(Key::parse(&"zz".repeat(20), "f").is_err());
        assert!(Key::parse(&"a".repeat(33), "f").is_err());
        let missing = Key::read(Path::new("/nonexistent/ferrite/l2.key")).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("ferrite l2 keygen > /nonexistent/ferrite/l2.key"),
            "{missing}"
        );
    }
}
