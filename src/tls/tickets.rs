//! Session-ticket keys: a fleet-wide key file with `next` / `current` /
//! `previous` slots, per-listener keys derived from it (HKDF), and the ticket
//! sealer rustls calls (`ProducesTickets`).
//!
//! Each worker gets its own sealer instance for each listener, so encrypting
//! and decrypting tickets takes no lock any other worker touches; a rotation
//! reaches the workers as a message with the new keys.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const FORMAT: &str = "mtlsgate-ticket-keys/1";
const KEY_LEN: usize = 32;
const ID_LEN: usize = 8;
const TAG_LEN: usize = 16;

/// One 32-byte secret from the key file (or generated in memory).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; KEY_LEN]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.id())
    }
}

impl Secret {
    pub fn random() -> Result<Secret, String> {
        let mut k = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut k).map_err(|_| "no randomness available".to_string())?;
        Ok(Secret(k))
    }

    /// A public name for the key: first 8 hex digits of its SHA-256.
    pub fn id(&self) -> String {
        crate::identity::hex(
            &aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.0).as_ref()[..4],
        )
    }

    fn parse(slot: &str, v: &str) -> Result<Secret, String> {
        let v = v.trim();
        if v.len() != KEY_LEN * 2 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{slot}: expected {} hex digits (a {KEY_LEN}-byte key), found {} characters",
                KEY_LEN * 2,
                v.len()
            ));
        }
        let mut k = [0u8; KEY_LEN];
        for (i, b) in k.iter_mut().enumerate() {
            *b =
                u8::from_str_radix(&v[i * 2..i * 2 + 2], 16).map_err(|e| format!("{slot}: {e}"))?;
        }
        Ok(Secret(k))
    }
}

/// The three slots of a key file. `current` encrypts; all three decrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    pub next: Secret,
    pub current: Secret,
    pub previous: Option<Secret>,
}

impl KeySet {
    pub fn generate() -> Result<KeySet, String> {
        Ok(KeySet {
            next: Secret::random()?,
            current: Secret::random()?,
            previous: None,
        })
    }

    /// next → current → previous, and a fresh next.
    pub fn rotated(&self) -> Result<KeySet, String> {
        Ok(KeySet {
            next: Secret::random()?,
            current: self.next.clone(),
            previous: Some(self.current.clone()),
        })
    }

    pub fn ids(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![("next", self.next.id()), ("current", self.current.id())];
        if let Some(p) = &self.previous {
            v.push(("previous", p.id()));
        }
        v
    }

    /// The key-file text (also how an upgrade hands keys to the new process).
    pub fn to_text(&self) -> String {
        let hex = |s: &Secret| crate::identity::hex(&s.0);
        let mut t = format!(
            "# mtlsgate session-ticket keys. Keep secret (mode 0600); the same file on every host of a fleet.\n\
             # Rotate with `mtlsgate ticket-keys rotate FILE`, then reload (SIGHUP) or wait for the file watch.\n\
             format = \"{FORMAT}\"\nnext = \"{}\"\ncurrent = \"{}\"\n",
            hex(&self.next),
            hex(&self.current)
        );
        if let Some(p) = &self.previous {
            t.push_str(&format!("previous = \"{}\"\n", hex(p)));
        }
        t
    }

    pub fn from_text(text: &str) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            format: String,
            next: String,
            current: String,
            previous: Option<String>,
        }
        let raw: Raw = toml::from_str(text).map_err(|e| e.message().to_string())?;
        if raw.format != FORMAT {
            return Err(format!("format: {:?} is not {FORMAT:?}", raw.format));
        }
        Ok(KeySet {
            next: Secret::parse("next", &raw.next)?,
            current: Secret::parse("current", &raw.current)?,
            previous: raw
                .previous
                .as_deref()
                .map(|p| Secret::parse("previous", p))
                .transpose()?,
        })
    }

    /// Reads a key file, refusing one that group or others may read.
    pub fn load(path: &Path) -> Result<KeySet, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "{}: permissions {:o} let others read the ticket keys; run `chmod 600 {}`",
                path.display(),
                meta.mode() & 0o777,
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        KeySet::from_text(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Writes atomically (temp file in the same directory, fsync, rename), mode 0600.
    pub fn store(&self, path: &Path) -> Result<(), String> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .ok_or_else(|| format!("{}: not a file name", path.display()))?;
        let tmp = dir.join(format!(
            ".{}.tmp{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(self.to_text().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: {e}", path.display())
        })
    }
}

/// A listener's key for one slot: AES-256-GCM plus the id written in front of tickets.
struct DerivedKey {
    id: [u8; ID_LEN],
    key: LessSafeKey,
}

struct Okm(usize);
impl hkdf::KeyType for Okm {
    fn len(&self) -> usize {
        self.0
    }
}

fn derive(secret: &Secret, listener: &str) -> Option<DerivedKey> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"mtlsgate ticket key v1").extract(&secret.0);
    let mut key = [0u8; KEY_LEN];
    let mut id = [0u8; ID_LEN];
    prk.expand(&[b"aead ", listener.as_bytes()], Okm(KEY_LEN))
        .ok()?
        .fill(&mut key)
        .ok()?;
    prk.expand(&[b"id ", listener.as_bytes()], Okm(ID_LEN))
        .ok()?
        .fill(&mut id)
        .ok()?;
    Some(DerivedKey {
        id,
        key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).ok()?),
    })
}

/// Why tickets were not accepted; read by the metrics snapshot.
#[derive(Debug, Default)]
pub struct TicketCounters {
    pub unknown_key: AtomicU64,
    pub expired: AtomicU64,
    pub malformed: AtomicU64,
}

/// One worker's ticket sealer for one listener.
pub struct Sealer {
    keys: Vec<DerivedKey>, // current first (encrypts), then next and previous
    lifetime: u32,
    counters: Arc<TicketCounters>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sealer({} keys, lifetime {} s)",
            self.keys.len(),
            self.lifetime
        )
    }
}

impl Sealer {
    pub fn new(
        set: &KeySet,
        listener: &str,
        lifetime: u32,
        counters: Arc<TicketCounters>,
    ) -> Option<Sealer> {
        let mut keys = vec![
            derive(&set.current, listener)?,
            derive(&set.next, listener)?,
        ];
        if let Some(p) = &set.previous {
            keys.push(derive(p, listener)?);
        }
        Some(Sealer {
            keys,
            lifetime,
            counters,
        })
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl rustls::server::ProducesTickets for Sealer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    /// id ‖ issued_at ‖ nonce ‖ AES-256-GCM(session), with id ‖ issued_at as
    /// associated data. The issue time is in the clear (but authenticated) so
    /// a ticket under a key rotated away since can still be told expired
    /// (too old anyway) from unknown (a key this gateway never had, or lost
    /// too early); it says no more than the ticket's mere presence does.
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let k = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(ID_LEN + 8 + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&k.id);
        out.extend_from_slice(&now().to_be_bytes());
        let aad_len = out.len();
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        k.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&out[..aad_len]),
                &mut sealed,
            )
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let why = match self.open(cipher) {
            Ok(session) => return Some(session),
            Err(why) => why,
        };
        // A ticket of the previous release (issue time inside): an upgrade
        // keeps its sessions resuming. Retire with that release's tickets.
        match self.open_sealed_time(cipher) {
            Some(Ok(session)) => return Some(session),
            Some(Err(())) => self.counters.expired.fetch_add(1, Ordering::Relaxed),
            None => why.fetch_add(1, Ordering::Relaxed),
        };
        None
    }
}

impl Sealer {
    /// This release's layout. The error is the counter to bump.
    fn open(&self, cipher: &[u8]) -> Result<Vec<u8>, &AtomicU64> {
        const HEAD: usize = ID_LEN + 8;
        if cipher.len() < HEAD + NONCE_LEN + TAG_LEN {
            return Err(&self.counters.malformed);
        }
        let (aad, rest) = cipher.split_at(HEAD);
        let (id, issued) = aad.split_at(ID_LEN);
        let issued = u64::from_be_bytes(issued.try_into().map_err(|_| &self.counters.malformed)?);
        let too_old = now().saturating_sub(issued) > u64::from(self.lifetime);
        let Some(k) = self.keys.iter().find(|k| k.id[..] == *id) else {
            // A claimed issue time may be forged, but only to pick which
            // counter a ticket that opens nowhere lands in.
            return Err(if too_old {
                &self.counters.expired
            } else {
                &self.counters.unknown_key
            });
        };
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| &self.counters.malformed)?;
        let mut buf = sealed.to_vec();
        let session = k
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| &self.counters.malformed)?;
        if too_old {
            return Err(&self.counters.expired);
        }
        Ok(session.to_vec())
    }

    /// The previous release's layout: id ‖ nonce ‖ AES-256-GCM(issued_at ‖
    /// session). `None`: not such a ticket; `Some(Err)`: one, expired.
    fn open_sealed_time(&self, cipher: &[u8]) -> Option<Result<Vec<u8>, ()>> {
        if cipher.len() < ID_LEN + NONCE_LEN + 8 + TAG_LEN {
            return None;
        }
        let (id, rest) = cipher.split_at(ID_LEN);
        let k = self.keys.iter().find(|k| k.id[..] == *id)?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = k.key.open_in_place(nonce, Aad::from(id), &mut buf).ok()?;
        let (issued, session) = plain.split_at(8);
        let issued = u64::from_be_bytes(issued.try_into().ok()?);
        if now().saturating_sub(issued) > u64::from(self.lifetime) {
            return Some(Err(()));
        }
        Some(Ok(session.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ProducesTickets;

    #[test]
    fn a_ticket_opens_on_the_same_listener_and_not_on_another() {
        let set = KeySet::generate().unwrap();
        let a = Sealer::new(&set, "a", 3600, Arc::default()).unwrap();
        let b = Sealer::new(&set, "b", 3600, Arc::default()).unwrap();
        let t = a.encrypt(b"session").unwrap();
        assert_eq!(a.decrypt(&t).as_deref(), Some(&b"session"[..]));
        assert_eq!(b.decrypt(&t), None);
        assert_eq!(b.counters.unknown_key.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn rotation_keeps_old_tickets_for_one_more_step() {
        let k1 = KeySet::generate().unwrap();
        let t = Sealer::new(&k1, "l", 3600, Arc::default())
            .unwrap()
            .encrypt(b"s")
            .unwrap();
        let k2 = k1.rotated().unwrap();
        assert!(Sealer::new(&k2, "l", 3600, Arc::default())
            .unwrap()
            .decrypt(&t)
            .is_some());
        let k3 = k2.rotated().unwrap();
        assert!(Sealer::new(&k3, "l", 3600, Arc::default())
            .unwrap()
            .decrypt(&t)
            .is_none());
    }

    #[test]
    fn an_old_ticket_under_a_rotated_away_key_counts_as_expired_not_unknown() {
        let k1 = KeySet::generate().unwrap();
        let old = Sealer::new(&k1, "l", 3600, Arc::default()).unwrap();
        let mut t = old.encrypt(b"s").unwrap();
        // Issued two hours ago (the clear issue time; its tag no longer
        // matters: the key is gone).
        let two_hours_ago = (now() - 7200).to_be_bytes();
        t[ID_LEN..ID_LEN + 8].copy_from_slice(&two_hours_ago);
        let k3 = k1.rotated().unwrap().rotated().unwrap();
        let new = Sealer::new(&k3, "l", 3600, Arc::default()).unwrap();
        assert_eq!(new.decrypt(&t), None);
        assert_eq!(new.counters.expired.load(Ordering::Relaxed), 1);
        assert_eq!(new.counters.unknown_key.load(Ordering::Relaxed), 0);
        // A fresh one under the lost key is unknown.
        assert_eq!(new.decrypt(&old.encrypt(b"s").unwrap()), None);
        assert_eq!(new.counters.unknown_key.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_ticket_in_the_previous_releases_layout_still_resumes() {
        let k = KeySet::generate().unwrap();
        let s = Sealer::new(&k, "l", 3600, Arc::default()).unwrap();
        let key = s.keys.first().unwrap();
        let nonce = [7u8; NONCE_LEN];
        let mut sealed = [&now().to_be_bytes()[..], b"old session"].concat();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&key.id[..]),
                &mut sealed,
            )
            .unwrap();
        let old = [&key.id[..], &nonce, &sealed].concat();
        assert_eq!(s.decrypt(&old).as_deref(), Some(&b"old session"[..]));
    }

    #[test]
    fn a_ticket_whose_issue_time_was_altered_does_not_open() {
        let k = KeySet::generate().unwrap();
        let s = Sealer::new(&k, "l", 3600, Arc::default()).unwrap();
        let mut t = s.encrypt(b"s").unwrap();
        t[ID_LEN + 7] ^= 1;
        assert_eq!(s.decrypt(&t), None);
        assert_eq!(s.counters.malformed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn key_file_text_round_trips_and_rejects_bad_lengths() {
        let k = KeySet::generate().unwrap().rotated().unwrap();
        assert_eq!(KeySet::from_text(&k.to_text()).unwrap(), k);
        let bad = k.to_text().replace("current = \"", "current = \"ab");
        assert!(KeySet::from_text(&bad).unwrap_err().contains("current"));
    }
}
