//! One synchronous pass of rustls's unbuffered state machine over a connection's bytes.
//!
//! `Engine` holds the rustls connection, the received ciphertext it has not
//! consumed (an incomplete record, usually nothing: an idle connection holds no
//! buffer here) and decrypted bytes the reader has not taken yet. `step` runs
//! rustls until it needs more from the peer or may send: records it queues are
//! encoded into an `Out` buffer, application data is decrypted where it was
//! received. No awaits here; the async driver (`stream`) calls it between
//! socket operations.

use crate::bufpool::{self, Pooled};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedConnectionCommon, UnbufferedStatus, WriteTraffic,
};
use rustls::{Error, InvalidMessage};
use std::ops::DerefMut;

/// A client or server unbuffered connection (rustls has no trait for the step).
pub trait Side: DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

macro_rules! side {
    ($conn:ty, $data:ty) => {
        impl Side for $conn {
            type Data = $data;
            fn process<'c, 'i>(
                &'c mut self,
                incoming: &'i mut [u8],
            ) -> UnbufferedStatus<'c, 'i, Self::Data> {
                self.process_tls_records(incoming)
            }
        }
    };
}

side!(UnbufferedServerConnection, ServerConnectionData);
side!(UnbufferedClientConnection, ClientConnectionData);

/// Bytes held for an incomplete message beyond this are refused: rustls
/// allows a 64 KiB handshake message, plus one partial record after it.
const MAX_PENDING: usize = 0xffff + 5 + 16 * 1024 + 2048 + 256;

/// What to do once rustls may send application data.
pub enum Act<'a> {
    Nothing,
    /// Encrypt a prefix of this (up to `bufpool::BIG` bytes).
    Encrypt(&'a [u8]),
    CloseNotify,
    /// Update our traffic keys (and ask the peer to update its own).
    #[cfg(test)]
    KeyUpdate,
}

/// Where the connection stands after a step.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// rustls waits for the peer (the handshake is not done).
    Blocked,
    /// Application data may be sent; `taken` bytes of an `Encrypt` were.
    Open { taken: usize },
    /// Both sides have sent close_notify.
    Closed,
}

/// Outgoing records: a pooled buffer, taken only when there is something to send.
#[derive(Default)]
pub struct Out {
    buf: Option<Pooled>,
    len: usize,
}

impl Out {
    /// The unfilled part, at least `need` bytes long.
    fn room(&mut self, need: usize) -> &mut [u8] {
        let buf = self.buf.get_or_insert_with(Pooled::out);
        if buf.len() < self.len + need {
            buf.resize(self.len + need, 0);
        }
        &mut buf[self.len..]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer and how much of it to write, if anything.
    pub fn take(&mut self) -> Option<(Pooled, usize)> {
        let len = std::mem::take(&mut self.len);
        self.buf.take().filter(|_| len > 0).map(|b| (b, len))
    }
}

pub struct Engine<C> {
    pub conn: C,
    /// Received bytes rustls has not consumed yet (an incomplete record).
    incoming: Option<Pooled>,
    /// Bumped whenever `incoming` changes, so a read that copied it can tell.
    /// A step that changes nothing leaves it: every step processes all
    /// complete records before it returns, so one taken while a read is
    /// pending (the other direction of a tcp pipe) finds only an incomplete
    /// record and neither decrypts nor discards.
    generation: u64,
    /// Decrypted bytes that did not fit the reader's buffer, from `plain_at`.
    plain: Vec<u8>,
    plain_at: usize,
    pub peer_closed: bool,
    /// A connection that failed stays failed (rustls would say so too).
    failed: Option<Error>,
}

impl<C: Side> Engine<C> {
    pub fn new(conn: C) -> Self {
        Engine {
            conn,
            incoming: None,
            generation: 0,
            plain: Vec::new(),
            plain_at: 0,
            peer_closed: false,
            failed: None,
        }
    }

    /// Whether anything received waits here (decrypted, or an incomplete record).
    pub fn holds_data(&self) -> bool {
        self.has_plain() || self.incoming.is_some()
    }

    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    pub fn has_plain(&self) -> bool {
        self.plain_at < self.plain.len()
    }

    /// Moves decrypted bytes into `buf`'s spare capacity; how many.
    pub fn take_plain(&mut self, buf: &mut Vec<u8>) -> usize {
        let rest = &self.plain[self.plain_at..];
        let n = rest.len().min(buf.capacity() - buf.len());
        buf.extend_from_slice(&rest[..n]);
        self.plain_at += n;
        if self.plain_at == self.plain.len() {
            self.plain = Vec::new(); // an idle connection keeps no plaintext buffer
            self.plain_at = 0;
        }
        n
    }

    /// A buffer for the next socket read: the incomplete record (copied; the
    /// original stays for steps taken while the read is pending) and room
    /// after it. Returns the buffer, how many bytes were copied, and the
    /// generation to hand back to `received`.
    pub fn read_buffer(&mut self, big: bool) -> Result<(Pooled, usize, u64), Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let pending = self.incoming.as_ref().map_or(0, |b| b.len());
        if pending > MAX_PENDING {
            let e = Error::InvalidMessage(InvalidMessage::MessageTooLarge);
            self.fail(e.clone(), &mut Out::default());
            return Err(e);
        }
        // A few pending bytes (a partner that stalls mid-record) don't earn a
        // big buffer; a stream in flight (`big`) or a long record does.
        let mut buf = if !big && pending <= bufpool::SMALL / 2 {
            Pooled::small()
        } else {
            Pooled::at_least(pending + bufpool::SMALL)
        };
        if let Some(p) = &self.incoming {
            buf.extend_from_slice(p);
        }
        Ok((buf, pending, self.generation))
    }

    /// Takes a read's buffer: `copied` bytes at its start are the incomplete
    /// record as of `generation`, the rest is new.
    pub fn received(&mut self, mut buf: Pooled, copied: usize, generation: u64) {
        if generation != self.generation {
            // A step consumed part of the old bytes meanwhile: keep what it
            // left, then the new bytes.
            let at = copied.min(buf.len());
            let fresh = buf.split_off(at);
            buf.clear();
            if let Some(old) = &self.incoming {
                buf.extend_from_slice(old);
            }
            buf.extend_from_slice(&fresh);
        }
        self.generation += 1;
        self.incoming = (!buf.is_empty()).then_some(buf);
    }

    /// Runs rustls until it needs the peer or may send, then does `act`.
    /// Decrypted bytes go to `sink`'s spare capacity, the rest to `plain`.
    pub fn step(
        &mut self,
        out: &mut Out,
        mut sink: Option<&mut Vec<u8>>,
        act: Act<'_>,
    ) -> Result<Step, Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut act = Some(act);
        loop {
            let incoming = match &mut self.incoming {
                Some(b) => &mut b[..],
                None => &mut [][..],
            };
            let UnbufferedStatus { mut discard, state } = self.conn.process(incoming);
            let next = match state {
                Err(e) => Err(e),
                Ok(ConnectionState::ReadTraffic(mut r)) => loop {
                    match r.next_record() {
                        None => break Ok(None),
                        Some(Err(e)) => break Err(e),
                        Some(Ok(rec)) => {
                            discard += rec.discard;
                            let to_sink = match (self.plain.is_empty(), sink.as_deref_mut()) {
                                (true, Some(s)) => {
                                    let n = rec.payload.len().min(s.capacity() - s.len());
                                    s.extend_from_slice(&rec.payload[..n]);
                                    n
                                }
                                _ => 0,
                            };
                            self.plain.extend_from_slice(&rec.payload[to_sink..]);
                        }
                    }
                },
                Ok(ConnectionState::EncodeTlsData(mut e)) => encode(&mut e, out).map(|()| None),
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    // The records are in `out`; the driver writes them before it
                    // next waits for the peer.
                    t.done();
                    Ok(None)
                }
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(Step::Blocked)),
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => {
                    self.peer_closed = true;
                    Ok(Some(Step::Closed))
                }
                Ok(ConnectionState::WriteTraffic(mut w)) => match act.take() {
                    None | Some(Act::Nothing) => Ok(Some(Step::Open { taken: 0 })),
                    Some(Act::Encrypt(data)) => {
                        encrypt(&mut w, data, out).map(|taken| Some(Step::Open { taken }))
                    }
                    Some(Act::CloseNotify) => {
                        close_notify(&mut w, out).map(|()| Some(Step::Open { taken: 0 }))
                    }
                    // rustls queues the KeyUpdate: the next pass encodes it.
                    #[cfg(test)]
                    Some(Act::KeyUpdate) => w.refresh_traffic_keys().map(|()| None),
                },
                // Early data is never enabled; no other state exists today.
                Ok(_) => Err(Error::General("unexpected TLS state".into())),
            };
            self.discard(discard);
            if self.peer_closed && self.incoming.is_some() {
                // rustls reads nothing after close_notify: bytes behind it
                // would be held for the connection's life.
                self.generation += 1;
                self.incoming = None;
            }
            match next {
                Ok(None) => continue,
                Ok(Some(s)) => return Ok(s),
                Err(e) => {
                    self.fail(e.clone(), out);
                    return Err(e);
                }
            }
        }
    }

    fn discard(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.generation += 1;
        if let Some(b) = &mut self.incoming {
            let n = n.min(b.len());
            b.drain(..n);
            if b.is_empty() {
                self.incoming = None; // back to the pool: nothing pending
            } else if b.len() <= bufpool::SMALL / 2 && b.capacity() > bufpool::SMALL {
                // A partner stalling mid-record keeps a small buffer, not the
                // big one its last read used (same bytes, same offsets).
                let mut small = Pooled::small();
                small.extend_from_slice(b);
                *b = small;
            }
        }
    }

    /// Remembers the error and encodes the alert rustls queued for it (queued
    /// records come out of a pass before rustls looks at `incoming`), so the
    /// driver can send it before closing.
    fn fail(&mut self, e: Error, out: &mut Out) {
        self.failed = Some(e);
        // Only while records are queued: a further pass would look at
        // `incoming` again and meet the same error (and queue a second alert).
        for _ in 0..8 {
            if !self.conn.wants_write() {
                break;
            }
            let incoming = match &mut self.incoming {
                Some(b) => &mut b[..],
                None => &mut [][..],
            };
            let status = self.conn.process(incoming);
            let encoded = match status.state {
                Ok(ConnectionState::EncodeTlsData(mut e)) => encode(&mut e, out).is_ok(),
                _ => false,
            };
            if !encoded {
                break;
            }
        }
        self.generation += 1;
        self.incoming = None;
        self.plain = Vec::new();
        self.plain_at = 0;
    }
}

/// Runs `write` on `out`'s free room, growing it once to the size rustls
/// says it needs (`needs` reads that from the error).
fn grow_to_fit<E>(
    out: &mut Out,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needs: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let mut need = 0;
    loop {
        match write(out.room(need)) {
            Ok(n) => {
                out.len += n;
                return Ok(());
            }
            Err(e) => match needs(&e) {
                Some(required) if need < required => need = required,
                _ => return Err(e),
            },
        }
    }
}

fn encode<D>(e: &mut EncodeTlsData<'_, D>, out: &mut Out) -> Result<(), Error> {
    let needs = |e: &EncodeError| match e {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    };
    grow_to_fit(out, |b| e.encode(b), needs)
        .map_err(|e| Error::General(format!("encoding a TLS record: {e}")))
}

/// Encrypts as much of `data` as fits one out buffer; how much it took (0
/// when records already in `out` must be written first).
fn encrypt<D>(w: &mut WriteTraffic<'_, D>, data: &[u8], out: &mut Out) -> Result<usize, Error> {
    let data = &data[..data.len().min(bufpool::BIG)];
    let mut need = 0;
    loop {
        match w.encrypt(data, out.room(need)) {
            Ok(n) => {
                out.len += n;
                return Ok(data.len());
            }
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                if !out.is_empty() {
                    return Ok(0);
                }
                if need >= required_size {
                    return Err(Error::General("TLS record does not fit".into()));
                }
                need = required_size;
            }
            Err(EncryptError::EncryptExhausted) => return Err(Error::EncryptError),
        }
    }
}

fn close_notify<D>(w: &mut WriteTraffic<'_, D>, out: &mut Out) -> Result<(), Error> {
    let needs = |e: &EncryptError| match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    };
    grow_to_fit(out, |b| w.queue_close_notify(b), needs).map_err(|_| Error::EncryptError)
}
