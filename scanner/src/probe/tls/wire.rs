//! TLS bytes on the wire: building crafted ClientHellos and parsing what a
//! server answers, for any protocol version from SSLv3 to TLS 1.3.
//!
//! rustls deliberately cannot speak SSLv3, TLS 1.0/1.1 or weak suites, so it
//! cannot tell whether a server still offers them; this module only needs
//! the unencrypted first flight, which is plain framing. Every length read
//! from the peer is checked against the bytes actually present and against a
//! hard cap before anything is allocated: a hostile server gets an error,
//! never a panic or a large allocation.

use std::fmt;

/// Record content types.
pub const CT_CHANGE_CIPHER_SPEC: u8 = 20;
pub const CT_ALERT: u8 = 21;
pub const CT_HANDSHAKE: u8 = 22;

/// Handshake message types.
pub const HS_CLIENT_HELLO: u8 = 1;
pub const HS_SERVER_HELLO: u8 = 2;
pub const HS_CERTIFICATE: u8 = 11;
pub const HS_SERVER_KEY_EXCHANGE: u8 = 12;
pub const HS_SERVER_HELLO_DONE: u8 = 14;

/// Extension types.
pub const EXT_SERVER_NAME: u16 = 0;
pub const EXT_SUPPORTED_GROUPS: u16 = 10;
pub const EXT_EC_POINT_FORMATS: u16 = 11;
pub const EXT_SIGNATURE_ALGORITHMS: u16 = 13;
pub const EXT_SUPPORTED_VERSIONS: u16 = 43;
pub const EXT_KEY_SHARE: u16 = 51;
pub const EXT_RENEGOTIATION_INFO: u16 = 0xff01;

/// Protocol version code points.
pub const SSL3: u16 = 0x0300;
pub const TLS10: u16 = 0x0301;
pub const TLS11: u16 = 0x0302;
pub const TLS12: u16 = 0x0303;
pub const TLS13: u16 = 0x0304;

/// Signalling cipher suite values (RFC 5746, RFC 7507).
pub const SCSV_RENEGOTIATION: u16 = 0x00ff;
pub const SCSV_FALLBACK: u16 = 0x5600;

/// Alert descriptions popscan reacts to.
pub const ALERT_HANDSHAKE_FAILURE: u8 = 40;
pub const ALERT_PROTOCOL_VERSION: u8 = 70;
pub const ALERT_INAPPROPRIATE_FALLBACK: u8 = 86;

/// Largest record body a conforming peer may send (2^14 plus the maximum
/// expansion allowed for protected records).
pub const MAX_RECORD: usize = 16384 + 2048;
/// Largest handshake message accepted: a certificate chain of a dozen large
/// certificates fits; a 16 MB length field does not.
pub const MAX_HANDSHAKE_MESSAGE: usize = 256 * 1024;

/// The HelloRetryRequest marker in ServerHello.random (RFC 8446 §4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
];

/// Signature algorithms offered: broad on purpose, popscan wants to see what
/// the server can do, not to be safe itself.
const SIG_ALGS: &[u16] = &[
    0x0403, 0x0503, 0x0603, 0x0807, 0x0808, 0x0804, 0x0805, 0x0806, 0x0809, 0x080a, 0x080b, 0x0401,
    0x0501, 0x0601, 0x0303, 0x0301, 0x0302, 0x0402, 0x0502, 0x0602, 0x0203, 0x0201, 0x0202,
];

/// What goes into one crafted ClientHello.
#[derive(Debug, Clone)]
pub struct HelloSpec {
    /// `legacy_version` in the hello body (TLS 1.3 hellos say TLS 1.2 here).
    pub client_version: u16,
    pub suites: Vec<u16>,
    pub sni: Option<String>,
    /// `supported_groups`; empty means the extension is left out.
    pub groups: Vec<u16>,
    /// `supported_versions`; empty means the extension is left out.
    pub versions: Vec<u16>,
    /// TLS 1.3 key shares. With `versions` set and this empty, an empty
    /// key_share list is sent, which makes a TLS 1.3 server answer with a
    /// HelloRetryRequest naming its group: no key agreement is needed.
    pub key_shares: Vec<(u16, Vec<u8>)>,
    /// Offer DEFLATE as well as null compression.
    pub offer_compression: bool,
    /// Add TLS_FALLBACK_SCSV to the suites.
    pub fallback_scsv: bool,
    /// Send no extensions at all (SSLv3-era servers may reject them).
    pub no_extensions: bool,
}

impl HelloSpec {
    pub fn new(client_version: u16, suites: Vec<u16>) -> Self {
        HelloSpec {
            client_version,
            suites,
            sni: None,
            groups: Vec::new(),
            versions: Vec::new(),
            key_shares: Vec::new(),
            offer_compression: false,
            fallback_scsv: false,
            no_extensions: false,
        }
    }

    /// The ClientHello as one or more handshake records, ready to write.
    pub fn to_records(&self) -> Vec<u8> {
        let body = self.hello_body();
        let mut msg = Vec::with_capacity(body.len() + 4);
        msg.push(HS_CLIENT_HELLO);
        put_u24(&mut msg, body.len());
        msg.extend_from_slice(&body);
        // Record layer version: TLS 1.0 for everything but SSLv3 hellos, as
        // browsers and testssl.sh do; some servers reject 1.2 here.
        let record_version = if self.client_version == SSL3 {
            SSL3
        } else {
            TLS10
        };
        let mut out = Vec::with_capacity(msg.len() + 10);
        for chunk in msg.chunks(16384) {
            out.push(CT_HANDSHAKE);
            out.extend_from_slice(&record_version.to_be_bytes());
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    fn hello_body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(512);
        b.extend_from_slice(&self.client_version.to_be_bytes());
        b.extend_from_slice(&random32());
        // A 32-byte session id, as TLS 1.3 middlebox compatibility mode does.
        b.push(32);
        b.extend_from_slice(&random32());
        let mut suites = self.suites.clone();
        suites.push(SCSV_RENEGOTIATION);
        if self.fallback_scsv {
            suites.push(SCSV_FALLBACK);
        }
        put_u16(&mut b, suites.len() * 2);
        for s in &suites {
            b.extend_from_slice(&s.to_be_bytes());
        }
        if self.offer_compression {
            b.extend_from_slice(&[2, 1, 0]);
        } else {
            b.extend_from_slice(&[1, 0]);
        }
        if self.no_extensions {
            return b;
        }
        let mut ext = Vec::with_capacity(256);
        if let Some(name) = &self.sni {
            let name = name.as_bytes();
            let mut e = Vec::with_capacity(name.len() + 5);
            put_u16(&mut e, name.len() + 3);
            e.push(0);
            put_u16(&mut e, name.len());
            e.extend_from_slice(name);
            put_ext(&mut ext, EXT_SERVER_NAME, &e);
        }
        if !self.groups.is_empty() {
            let mut e = Vec::new();
            put_u16(&mut e, self.groups.len() * 2);
            for g in &self.groups {
                e.extend_from_slice(&g.to_be_bytes());
            }
            put_ext(&mut ext, EXT_SUPPORTED_GROUPS, &e);
            // uncompressed, ansiX962_compressed_prime, ansiX962_compressed_char2
            put_ext(&mut ext, EXT_EC_POINT_FORMATS, &[3, 0, 1, 2]);
        }
        if self.client_version >= TLS12 || !self.versions.is_empty() {
            let mut e = Vec::new();
            put_u16(&mut e, SIG_ALGS.len() * 2);
            for s in SIG_ALGS {
                e.extend_from_slice(&s.to_be_bytes());
            }
            put_ext(&mut ext, EXT_SIGNATURE_ALGORITHMS, &e);
        }
        if !self.versions.is_empty() {
            let mut e = vec![(self.versions.len() * 2) as u8];
            for v in &self.versions {
                e.extend_from_slice(&v.to_be_bytes());
            }
            put_ext(&mut ext, EXT_SUPPORTED_VERSIONS, &e);
            let mut shares = Vec::new();
            for (g, k) in &self.key_shares {
                shares.extend_from_slice(&g.to_be_bytes());
                put_u16(&mut shares, k.len());
                shares.extend_from_slice(k);
            }
            let mut e = Vec::new();
            put_u16(&mut e, shares.len());
            e.extend_from_slice(&shares);
            put_ext(&mut ext, EXT_KEY_SHARE, &e);
        }
        put_u16(&mut b, ext.len());
        b.extend_from_slice(&ext);
        b
    }
}

fn random32() -> [u8; 32] {
    let mut r = [0u8; 32];
    // A failed RNG only makes the hello predictable, which is harmless for
    // a probe that never completes a handshake.
    let _ = getrandom::fill(&mut r);
    r
}

fn put_u16(b: &mut Vec<u8>, v: usize) {
    b.extend_from_slice(&(v as u16).to_be_bytes());
}

fn put_u24(b: &mut Vec<u8>, v: usize) {
    b.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]);
}

fn put_ext(b: &mut Vec<u8>, ty: u16, body: &[u8]) {
    b.extend_from_slice(&ty.to_be_bytes());
    put_u16(b, body.len());
    b.extend_from_slice(body);
}

/// Why the server's bytes could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(what: impl Into<String>) -> Result<T, Malformed> {
    Err(Malformed(what.into()))
}

/// A bounds-checked cursor over bytes received from the peer.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.remaining() {
            return bad(format!(
                "{}: needs {n} more bytes at offset {}, only {} left",
                self.what,
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u24(&mut self) -> Result<usize, Malformed> {
        let b = self.take(3)?;
        Ok(((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize)
    }

    /// A vector prefixed by a 1-byte length.
    pub fn vec8(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u8()? as usize;
        self.take(n)
    }

    /// A vector prefixed by a 2-byte length.
    pub fn vec16(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// A vector prefixed by a 3-byte length.
    pub fn vec24(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u24()?;
        self.take(n)
    }
}

/// A record header as read from the wire, already checked against
/// [`MAX_RECORD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub content_type: u8,
    pub version: u16,
    pub len: usize,
}

/// Checks a 5-byte record header. Anything that is not a TLS record (an
/// HTTP answer, SSH banner, SSLv2 framing or garbage) is rejected here, so
/// the caller never waits for a body that will not come.
pub fn parse_record_header(h: [u8; 5]) -> Result<RecordHeader, Malformed> {
    let content_type = h[0];
    if !(CT_CHANGE_CIPHER_SPEC..=24).contains(&content_type) {
        let printable: String = h
            .iter()
            .map(|&c| if c.is_ascii_graphic() { c as char } else { '.' })
            .collect();
        return bad(format!(
            "not a TLS record: first bytes {:02x?} ({printable:?})",
            h
        ));
    }
    let version = u16::from_be_bytes([h[1], h[2]]);
    if h[1] != 3 && !(h[1] == 0 && h[2] == 0 && content_type == CT_ALERT) {
        return bad(format!("record version 0x{version:04x} is not SSL 3 / TLS"));
    }
    let len = u16::from_be_bytes([h[3], h[4]]) as usize;
    if len > MAX_RECORD {
        return bad(format!(
            "record length {len} exceeds the TLS maximum of {MAX_RECORD}"
        ));
    }
    Ok(RecordHeader {
        content_type,
        version,
        len,
    })
}

/// The server's answer to a ClientHello, as far as popscan reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    /// `legacy_version` field.
    pub legacy_version: u16,
    /// The negotiated version: `supported_versions` if present, else legacy.
    pub version: u16,
    pub suite: u16,
    pub compression: u8,
    pub is_hrr: bool,
    /// The group a HelloRetryRequest asks for, or the server's key share group.
    pub group: Option<u16>,
    /// RFC 5746 renegotiation_info present.
    pub secure_renegotiation: bool,
    /// ServerHello.random ends with the RFC 8446 §4.1.3 downgrade sentinel.
    pub downgrade_sentinel: bool,
    pub extensions: Vec<u16>,
}

pub fn parse_server_hello(body: &[u8]) -> Result<ServerHello, Malformed> {
    let mut r = Reader::new(body, "ServerHello");
    let legacy_version = r.u16()?;
    let random = r.take(32)?;
    let is_hrr = random == HRR_RANDOM;
    let downgrade_sentinel = random.ends_with(b"DOWNGRD\x01") || random.ends_with(b"DOWNGRD\x00");
    let sid = r.vec8()?;
    if sid.len() > 32 {
        return bad(format!("ServerHello: session id of {} bytes", sid.len()));
    }
    let suite = r.u16()?;
    let compression = r.u8()?;
    let mut hello = ServerHello {
        legacy_version,
        version: legacy_version,
        suite,
        compression,
        is_hrr,
        group: None,
        secure_renegotiation: false,
        downgrade_sentinel,
        extensions: Vec::new(),
    };
    if r.remaining() == 0 {
        return Ok(hello);
    }
    let mut exts = Reader::new(r.vec16()?, "ServerHello extensions");
    while exts.remaining() > 0 {
        let ty = exts.u16()?;
        let data = exts.vec16()?;
        hello.extensions.push(ty);
        let mut d = Reader::new(data, "ServerHello extension");
        match ty {
            EXT_SUPPORTED_VERSIONS => hello.version = d.u16()?,
            EXT_KEY_SHARE => hello.group = Some(d.u16()?),
            EXT_RENEGOTIATION_INFO => hello.secure_renegotiation = true,
            _ => {}
        }
    }
    Ok(hello)
}

/// A certificate list from a TLS ≤ 1.2 Certificate message, leaf first.
pub fn parse_certificate(body: &[u8]) -> Result<Vec<Vec<u8>>, Malformed> {
    let mut r = Reader::new(body, "Certificate");
    let mut list = Reader::new(r.vec24()?, "Certificate list");
    let mut chain = Vec::new();
    while list.remaining() > 0 {
        let der = list.vec24()?;
        if der.is_empty() {
            return bad("Certificate: empty certificate entry");
        }
        chain.push(der.to_vec());
    }
    Ok(chain)
}

/// The key-exchange parameters in a ServerKeyExchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyExchange {
    /// Finite-field DHE: bits of the prime p.
    Dhe { prime_bits: u32 },
    /// ECDHE over a named group.
    Ecdhe { group: u16 },
}

/// Reads a ServerKeyExchange for a DHE (`dhe == true`) or ECDHE suite.
pub fn parse_server_key_exchange(body: &[u8], dhe: bool) -> Result<KeyExchange, Malformed> {
    let mut r = Reader::new(body, "ServerKeyExchange");
    if dhe {
        let p = r.vec16()?;
        let lead = p.iter().take_while(|&&b| b == 0).count();
        let p = &p[lead..];
        let bits = match p.first() {
            Some(&top) => (p.len() as u32 - 1) * 8 + (8 - top.leading_zeros()),
            None => return bad("ServerKeyExchange: empty DH prime"),
        };
        Ok(KeyExchange::Dhe { prime_bits: bits })
    } else {
        match r.u8()? {
            3 => Ok(KeyExchange::Ecdhe { group: r.u16()? }),
            other => bad(format!(
                "ServerKeyExchange: curve type {other}, only named curves (3) are understood"
            )),
        }
    }
}

/// Splits handshake messages out of a stream of handshake record bodies,
/// reassembling messages that span records.
#[derive(Default)]
pub struct HandshakeBuffer {
    buf: Vec<u8>,
}

impl HandshakeBuffer {
    pub fn push(&mut self, record_body: &[u8]) {
        self.buf.extend_from_slice(record_body);
    }

    /// The next complete message (type, body), `Ok(None)` if more bytes are
    /// needed, or an error for a length beyond [`MAX_HANDSHAKE_MESSAGE`].
    pub fn next_message(&mut self) -> Result<Option<(u8, Vec<u8>)>, Malformed> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let ty = self.buf[0];
        let len =
            ((self.buf[1] as usize) << 16) | ((self.buf[2] as usize) << 8) | self.buf[3] as usize;
        if len > MAX_HANDSHAKE_MESSAGE {
            return bad(format!(
                "handshake message type {ty} claims {len} bytes (limit {MAX_HANDSHAKE_MESSAGE})"
            ));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some((ty, body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_hello_bytes(version: u16, suite: u16, exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&TLS12.to_be_bytes());
        b.extend_from_slice(&[7u8; 32]);
        b.push(0);
        b.extend_from_slice(&suite.to_be_bytes());
        b.push(0);
        let mut e = Vec::new();
        for (t, d) in exts {
            put_ext(&mut e, *t, d);
        }
        if version == TLS13 {
            put_ext(&mut e, EXT_SUPPORTED_VERSIONS, &TLS13.to_be_bytes());
        }
        put_u16(&mut b, e.len());
        b.extend_from_slice(&e);
        b
    }

    #[test]
    fn client_hello_is_well_formed() {
        let mut spec = HelloSpec::new(TLS12, vec![0xC02F, 0x1301]);
        spec.sni = Some("example.gov.vn".into());
        spec.groups = vec![0x001D];
        spec.versions = vec![TLS13];
        let rec = spec.to_records();
        let h = parse_record_header([rec[0], rec[1], rec[2], rec[3], rec[4]]).unwrap();
        assert_eq!(h.content_type, CT_HANDSHAKE);
        assert_eq!(h.len, rec.len() - 5);
        let mut hs = HandshakeBuffer::default();
        hs.push(&rec[5..]);
        let (ty, body) = hs.next_message().unwrap().unwrap();
        assert_eq!(ty, HS_CLIENT_HELLO);
        let mut r = Reader::new(&body, "hello");
        assert_eq!(r.u16().unwrap(), TLS12);
        r.take(32).unwrap();
        assert_eq!(r.vec8().unwrap().len(), 32);
        let suites = r.vec16().unwrap();
        assert_eq!(suites, &[0xC0, 0x2F, 0x13, 0x01, 0x00, 0xFF]);
        assert_eq!(r.vec8().unwrap(), &[0]);
        let mut exts = Reader::new(r.vec16().unwrap(), "exts");
        let mut seen = Vec::new();
        while exts.remaining() > 0 {
            seen.push(exts.u16().unwrap());
            exts.vec16().unwrap();
        }
        assert_eq!(
            seen,
            vec![
                EXT_SERVER_NAME,
                EXT_SUPPORTED_GROUPS,
                EXT_EC_POINT_FORMATS,
                EXT_SIGNATURE_ALGORITHMS,
                EXT_SUPPORTED_VERSIONS,
                EXT_KEY_SHARE
            ]
        );
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn server_hello_versions_and_hrr() {
        let sh = parse_server_hello(&server_hello_bytes(
            TLS12,
            0xC02F,
            &[(EXT_RENEGOTIATION_INFO, vec![0])],
        ))
        .unwrap();
        assert_eq!(
            (sh.version, sh.suite, sh.secure_renegotiation),
            (TLS12, 0xC02F, true)
        );
        let mut hrr = server_hello_bytes(TLS13, 0x1301, &[(EXT_KEY_SHARE, vec![0, 0x17])]);
        hrr[2..34].copy_from_slice(&HRR_RANDOM);
        let h = parse_server_hello(&hrr).unwrap();
        assert!(h.is_hrr);
        assert_eq!((h.version, h.group), (TLS13, Some(0x17)));
    }

    #[test]
    fn hostile_lengths_are_errors_not_panics() {
        assert!(parse_record_header([22, 3, 3, 0xff, 0xff]).is_err());
        assert!(parse_record_header(*b"HTTP/").is_err());
        assert!(parse_record_header(*b"SSH-2").is_err());
        let mut hs = HandshakeBuffer::default();
        hs.push(&[2, 0xff, 0xff, 0xff]);
        assert!(hs.next_message().is_err(), "16 MB message refused up front");
        assert!(parse_server_hello(&[3, 3, 1]).is_err());
        assert!(parse_certificate(&[0, 0, 9, 0, 0, 20, 1]).is_err());
        assert!(parse_server_key_exchange(&[0, 0], true).is_err());
        assert!(parse_server_key_exchange(&[1, 0, 23], false).is_err());
        // Every prefix of a valid ServerHello is an error, never a panic.
        let sh = server_hello_bytes(TLS13, 0x1301, &[(EXT_KEY_SHARE, vec![0, 0x1d, 0, 1, 9])]);
        for n in 0..sh.len() {
            let _ = parse_server_hello(&sh[..n]);
        }
    }

    #[test]
    fn key_exchange_parameters() {
        let mut dh = vec![0x01, 0x00];
        dh.extend(std::iter::repeat_n(0xffu8, 256));
        assert_eq!(
            parse_server_key_exchange(&dh, true).unwrap(),
            KeyExchange::Dhe { prime_bits: 2048 }
        );
        assert_eq!(
            parse_server_key_exchange(&[3, 0, 0x1d, 32], false).unwrap(),
            KeyExchange::Ecdhe { group: 0x1d }
        );
    }
}
