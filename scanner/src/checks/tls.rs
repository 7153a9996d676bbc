//! TLS controls: protocols, suite classes, DHE size, downgrade protection,
//! renegotiation and compression.

use super::Outcome;
use crate::evidence::EndpointFacts;
use crate::policy::TlsCheck;
use crate::probe::tls::{FallbackScsv, Protocol, TlsEvidence};

pub(super) fn check(c: &TlsCheck, ep: &EndpointFacts, tls: &TlsEvidence, out: &mut Outcome) {
    let at = &ep.label;
    let src = &tls.source;
    match c {
        TlsCheck::Protocols { allowed } => {
            let allowed: Vec<Protocol> = allowed.iter().map(|p| p.0).collect();
            let offered = tls.offered_protocols();
            for p in &offered {
                if !allowed.contains(p) {
                    out.fail(format!("{p} offered on {at} [{src}]"));
                }
            }
            if offered.is_empty() {
                out.error(format!("{at}: no protocol version was accepted [{src}]"));
            } else if offered.iter().all(|p| allowed.contains(p)) {
                let list: Vec<&str> = offered.iter().map(|p| p.name()).collect();
                out.ok(format!("{at} offers only {} [{src}]", list.join(", ")));
            }
        }
        TlsCheck::CipherClasses { forbidden } => {
            let mut any = false;
            for ps in tls.protocols.iter().filter(|p| p.offered) {
                for s in &ps.suites {
                    any = true;
                    let bad: Vec<String> = s
                        .classes
                        .iter()
                        .filter(|c| forbidden.iter().any(|f| f.0 == **c))
                        .map(|c| c.name().to_string())
                        .collect();
                    if !bad.is_empty() {
                        out.fail(format!(
                            "{} ({}) offered with {} on {at} [{src}]",
                            s.iana,
                            bad.join(", "),
                            ps.protocol
                        ));
                    }
                }
            }
            if !any {
                out.error(format!("{at}: no cipher suites were enumerated [{src}]"));
            } else if out.failures.is_empty() {
                out.ok(format!("{at}: no offered suite is in a forbidden class [{src}]"));
            }
        }
        TlsCheck::DheMinBits { min_bits } => match tls.dhe_bits {
            Some(b) if b < *min_bits => {
                out.fail(format!("{b}-bit DHE prime on {at}, policy needs ≥ {min_bits} [{src}]"))
            }
            Some(b) => out.ok(format!("{b}-bit DHE prime on {at} [{src}]")),
            None => out.ok(format!("{at}: no finite-field DHE suite offered [{src}]")),
        },
        TlsCheck::DowngradeProtection => match tls.fallback_scsv {
            Some(FallbackScsv::Enforced) => {
                out.ok(format!("{at} refuses downgraded handshakes (TLS_FALLBACK_SCSV) [{src}]"))
            }
            Some(FallbackScsv::Sentinel) => out.ok(format!(
                "{at} ignores TLS_FALLBACK_SCSV but marks downgraded handshakes with the RFC 8446 sentinel [{src}]"
            )),
            Some(FallbackScsv::NotApplicable) => {
                out.ok(format!("{at} offers a single protocol version, no downgrade possible [{src}]"))
            }
            Some(FallbackScsv::Ignored) => out.fail(format!(
                "{at} accepts a downgraded handshake despite TLS_FALLBACK_SCSV [{src}]"
            )),
            None => out.error(format!("{at}: TLS_FALLBACK_SCSV behaviour not established [{src}]")),
        },
        TlsCheck::RenegotiationCompression => {
            match tls.secure_renegotiation {
                Some(false) => out.fail(format!(
                    "{at} lacks RFC 5746 secure renegotiation [{src}]"
                )),
                Some(true) => out.ok(format!("{at} supports secure renegotiation [{src}]")),
                None => {}
            }
            match tls.compression {
                Some(true) => out.fail(format!("{at} accepts TLS compression (CRIME) [{src}]")),
                Some(false) => out.ok(format!("{at} refuses TLS compression [{src}]")),
                None => out.error(format!("{at}: TLS compression not established [{src}]")),
            }
        }
    }
}
