//! The enumeration strategy: which handshakes to try, in what order, and
//! what each answer proves.
//!
//! - Protocols: one hello per version carrying every suite; a ServerHello at
//!   exactly that version proves it offered.
//! - Suites: offer the full registry, remove what the server picked, repeat
//!   until it refuses — one connection per accepted suite plus one, instead
//!   of one per registry entry.
//! - Server order: offer the first two found suites reversed; a server that
//!   still picks its favourite enforces its own order.
//! - Groups: TLS 1.3 hellos with an empty key_share list and one group make
//!   the server answer with a HelloRetryRequest naming that group, so no key
//!   agreement is needed; without TLS 1.3, ECDHE-only TLS 1.2 hellos and the
//!   curve named in ServerKeyExchange.

use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::Semaphore;

use super::evidence::{
    FallbackScsv, OfferedGroup, OfferedSuite, Protocol, ProtocolSupport, TlsEvidence,
};
use super::exchange::{exchange, Answer, ExchangeError, Flight, Target};
use super::wire::{
    HelloSpec, KeyExchange, ALERT_INAPPROPRIATE_FALLBACK, SSL3, TLS10, TLS11, TLS12, TLS13,
};
use super::{chain13, groups, suites};

/// Why an endpoint could not be probed. Carries the endpoint so a report
/// line is self-explanatory.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{endpoint}: {error}")]
pub struct ProbeError {
    pub endpoint: String,
    pub error: ExchangeError,
}

/// Bounds on one endpoint's probe.
#[derive(Debug, Clone)]
pub struct ProbeLimits {
    /// Handshakes in flight at once against this endpoint.
    pub parallel: usize,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        ProbeLimits { parallel: 8 }
    }
}

fn version_of(p: Protocol) -> u16 {
    match p {
        Protocol::Ssl2 => 0x0002,
        Protocol::Ssl3 => SSL3,
        Protocol::Tls10 => TLS10,
        Protocol::Tls11 => TLS11,
        Protocol::Tls12 => TLS12,
        Protocol::Tls13 => TLS13,
    }
}

/// Versions popscan tests (SSLv2 uses a different framing and is not tested).
const TESTED: [Protocol; 5] = [
    Protocol::Ssl3,
    Protocol::Tls10,
    Protocol::Tls11,
    Protocol::Tls12,
    Protocol::Tls13,
];

struct Prober {
    target: Target,
    gate: Arc<Semaphore>,
}

impl Prober {
    async fn send(&self, spec: &HelloSpec, want_flight: bool) -> Result<Answer, ExchangeError> {
        let _permit = self
            .gate
            .acquire()
            .await
            .map_err(|e| ExchangeError::Io(e.to_string()))?;
        exchange(&self.target, spec, want_flight).await
    }

    /// A hello for protocol `p` offering `suites` and every known group.
    fn hello(&self, p: Protocol, suites: Vec<u16>) -> HelloSpec {
        let mut spec = if p == Protocol::Tls13 {
            let mut s = HelloSpec::new(TLS12, suites);
            s.versions = vec![TLS13];
            s
        } else {
            HelloSpec::new(version_of(p), suites)
        };
        if p == Protocol::Ssl3 {
            spec.no_extensions = true;
        } else {
            spec.sni = self.target.sni.clone();
            spec.groups = groups::GROUPS.iter().map(|(id, _)| *id).collect();
        }
        spec
    }

    /// The suite the server picks at exactly protocol `p`, if it accepts.
    async fn pick(&self, p: Protocol, offer: Vec<u16>) -> Result<Option<u16>, ExchangeError> {
        let spec = self.hello(p, offer);
        Ok(match self.send(&spec, false).await? {
            Answer::Hello(f) if f.hello.version == version_of(p) => Some(f.hello.suite),
            _ => None,
        })
    }

    async fn enumerate(&self, p: Protocol) -> Result<ProtocolSupport, ExchangeError> {
        let mut candidates = candidate_suites(p);
        let mut found: Vec<u16> = Vec::new();
        while !candidates.is_empty() {
            let Some(chosen) = self.pick(p, candidates.clone()).await? else {
                break;
            };
            let Some(pos) = candidates.iter().position(|&c| c == chosen) else {
                return Err(ExchangeError::Malformed(format!(
                    "server chose suite 0x{chosen:04x}, which was not offered"
                )));
            };
            candidates.remove(pos);
            found.push(chosen);
        }
        let server_order = if found.len() >= 2 {
            match self.pick(p, vec![found[1], found[0]]).await? {
                Some(s) if s == found[0] => Some(true),
                Some(s) if s == found[1] => Some(false),
                _ => None,
            }
        } else {
            None
        };
        Ok(ProtocolSupport {
            protocol: p,
            offered: !found.is_empty(),
            suites: found.into_iter().map(suites::offered).collect(),
            server_order,
        })
    }

    /// Whether protocol `p` is offered at all (with every suite on offer),
    /// and the flight of that handshake for TLS ≤ 1.2.
    async fn detect(&self, p: Protocol) -> Result<Option<Flight>, ExchangeError> {
        let spec = self.hello(p, candidate_suites(p));
        Ok(match self.send(&spec, true).await? {
            Answer::Hello(f) if f.hello.version == version_of(p) => Some(f),
            _ => None,
        })
    }

    async fn tls13_group(&self, g: u16) -> Result<bool, ExchangeError> {
        let mut spec = self.hello(Protocol::Tls13, candidate_suites(Protocol::Tls13));
        spec.groups = vec![g];
        Ok(match self.send(&spec, false).await? {
            Answer::Hello(f) => f.hello.version == TLS13 && f.hello.group == Some(g),
            _ => false,
        })
    }

    async fn tls12_group(&self, p: Protocol, ecdhe: &[u16], g: u16) -> Result<bool, ExchangeError> {
        let mut spec = self.hello(p, ecdhe.to_vec());
        spec.groups = vec![g];
        Ok(match self.send(&spec, true).await? {
            Answer::Hello(f) => f.key_exchange == Some(KeyExchange::Ecdhe { group: g }),
            _ => false,
        })
    }
}

/// Suites worth offering for a protocol: the TLS 1.3 ones for 1.3, all
/// others below.
fn candidate_suites(p: Protocol) -> Vec<u16> {
    suites::all()
        .iter()
        .filter(|s| s.is_tls13() == (p == Protocol::Tls13))
        .map(|s| s.id)
        .collect()
}

/// Probes one endpoint fully. An endpoint that cannot be reached, stalls or
/// answers with bytes that are not TLS is an error; a TLS server that
/// refuses every version yields evidence with nothing offered.
pub async fn probe(target: Target, limits: &ProbeLimits) -> Result<TlsEvidence, ProbeError> {
    let endpoint = match &target.sni {
        Some(n) => format!("{n} ({})", target.addr),
        None => target.addr.to_string(),
    };
    let prober = Prober {
        gate: Arc::new(Semaphore::new(limits.parallel.max(1))),
        target,
    };
    prober
        .evidence()
        .await
        .map_err(|error| ProbeError { endpoint, error })
}

/// A protocol version the endpoint answered, with the flight it sent.
type Offered = (Protocol, Option<Flight>);

impl Prober {
    /// Everything about the endpoint, in the order each step needs the
    /// one before: versions, suites, groups, legacy facts, downgrade.
    async fn evidence(&self) -> Result<TlsEvidence, ExchangeError> {
        let offered = self.offered_protocols().await?;
        let protocols = self.protocols(&offered).await?;
        // The newest legacy (≤ 1.2) handshake carries chain, renegotiation and
        // key-exchange facts.
        let legacy = offered
            .iter()
            .rev()
            .find(|(p, _)| *p != Protocol::Tls13)
            .and_then(|(p, f)| f.clone().map(|f| (*p, f)));
        let tls13 = offered.iter().any(|(p, _)| *p == Protocol::Tls13);
        let mut ev = TlsEvidence {
            protocols,
            source: "popscan-tls".to_string(),
            ..TlsEvidence::default()
        };
        ev.groups = self.groups(&ev, tls13, legacy.as_ref()).await?;
        match &legacy {
            Some((p, flight)) => self.legacy_facts(&mut ev, *p, flight).await?,
            None if tls13 => {
                // TLS 1.3 has neither compression nor renegotiation; the
                // chain is encrypted, so a real handshake fetches it.
                ev.compression = Some(false);
                ev.chain = chain13::fetch(&self.target).await?;
            }
            None => {}
        }
        ev.fallback_scsv = self.fallback(&ev).await?;
        Ok(ev)
    }

    /// The versions the endpoint answers, each detected with one hello.
    async fn offered_protocols(&self) -> Result<Vec<Offered>, ExchangeError> {
        let detected = join_all(TESTED.iter().map(|&p| self.detect(p))).await;
        let mut offered: Vec<(Protocol, Option<Flight>)> = Vec::new();
        for (p, r) in TESTED.iter().zip(detected) {
            if let Some(f) = r? {
                offered.push((*p, Some(f)));
            }
        }
        Ok(offered)
    }

    /// Suites of every offered version (by elimination), and a "not
    /// offered" entry for every other tested version.
    async fn protocols(&self, offered: &[Offered]) -> Result<Vec<ProtocolSupport>, ExchangeError> {
        let enumerated = join_all(offered.iter().map(|(p, _)| self.enumerate(*p))).await;
        let mut protocols: Vec<ProtocolSupport> = Vec::new();
        for p in TESTED {
            match offered.iter().position(|(q, _)| *q == p) {
                Some(_) => {}
                None => protocols.push(ProtocolSupport {
                    protocol: p,
                    offered: false,
                    suites: Vec::new(),
                    server_order: None,
                }),
            }
        }
        for r in enumerated {
            protocols.push(r?);
        }
        protocols.sort_by_key(|p| p.protocol);
        Ok(protocols)
    }

    /// Named groups: through HelloRetryRequest on TLS 1.3, else one
    /// ECDHE hello per curve on the newest legacy version.
    async fn groups(
        &self,
        ev: &TlsEvidence,
        tls13: bool,
        legacy: Option<&(Protocol, Flight)>,
    ) -> Result<Option<Vec<OfferedGroup>>, ExchangeError> {
        if tls13 {
            let checks = join_all(groups::GROUPS.iter().map(|(g, _)| self.tls13_group(*g))).await;
            let mut found = Vec::new();
            for ((g, _), r) in groups::GROUPS.iter().zip(checks) {
                if r? {
                    found.push(groups::offered(*g));
                }
            }
            return Ok(Some(found));
        } else if let Some((p, _)) = legacy {
            let ecdhe: Vec<u16> = offered_suites(ev, *p)
                .filter(|s| suites::by_id(s.id).is_some_and(|s| s.is_ecdhe()))
                .map(|s| s.id)
                .collect();
            if ecdhe.is_empty() {
                return Ok(Some(Vec::new()));
            } else {
                let ec: Vec<u16> = groups::GROUPS
                    .iter()
                    .map(|(g, _)| *g)
                    .filter(|g| !groups::is_ffdhe(*g))
                    .collect();
                let checks = join_all(ec.iter().map(|g| self.tls12_group(*p, &ecdhe, *g))).await;
                let mut found = Vec::new();
                for (g, r) in ec.iter().zip(checks) {
                    if r? {
                        found.push(groups::offered(*g));
                    }
                }
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// What the newest legacy handshake says: renegotiation, chain, DHE
    /// prime size, compression.
    async fn legacy_facts(
        &self,
        ev: &mut TlsEvidence,
        p: Protocol,
        flight: &Flight,
    ) -> Result<(), ExchangeError> {
        ev.secure_renegotiation = Some(flight.hello.secure_renegotiation);
        ev.chain = flight.chain.clone().unwrap_or_default();

        // DHE prime size, from a handshake that allows only DHE suites.
        let dhe: Vec<u16> = offered_suites(ev, p)
            .filter(|s| suites::by_id(s.id).is_some_and(|s| s.is_dhe()))
            .map(|s| s.id)
            .collect();
        if !dhe.is_empty() {
            let spec = self.hello(p, dhe);
            if let Answer::Hello(f) = self.send(&spec, true).await? {
                if let Some(KeyExchange::Dhe { prime_bits }) = f.key_exchange {
                    ev.dhe_bits = Some(prime_bits);
                }
            }
        }

        // Compression (CRIME): offer DEFLATE next to null.
        let mut spec = self.hello(p, candidate_suites(p));
        spec.offer_compression = true;
        ev.compression = match self.send(&spec, false).await? {
            Answer::Hello(f) => Some(f.hello.compression != 0),
            _ => None,
        };
        Ok(())
    }

    /// Downgrade protection: a hello one version below the best, flagged
    /// as a fallback, must be refused.
    async fn fallback(&self, ev: &TlsEvidence) -> Result<Option<FallbackScsv>, ExchangeError> {
        let versions: Vec<Protocol> = ev.offered_protocols();
        Ok(if versions.len() < 2 {
            Some(FallbackScsv::NotApplicable)
        } else {
            let lower = versions[versions.len() - 2];
            let mut spec = self.hello(lower, candidate_suites(lower));
            spec.fallback_scsv = true;
            match self.send(&spec, false).await? {
                Answer::Alert(ALERT_INAPPROPRIATE_FALLBACK) => Some(FallbackScsv::Enforced),
                Answer::Hello(f) if f.hello.downgrade_sentinel => Some(FallbackScsv::Sentinel),
                Answer::Hello(_) => Some(FallbackScsv::Ignored),
                // Refused some other way: not what RFC 7507 asks, not a downgrade
                // either; leave it unestablished rather than guess.
                _ => None,
            }
        })
    }
}

fn offered_suites(ev: &TlsEvidence, p: Protocol) -> impl Iterator<Item = &OfferedSuite> {
    ev.protocols
        .iter()
        .filter(move |s| s.protocol == p)
        .flat_map(|s| s.suites.iter())
}
