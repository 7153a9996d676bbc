//! `popscan probe` output for a terminal.

use std::fmt::Write;
use std::time::Duration;

use super::evidence::{FallbackScsv, TlsEvidence};

fn yes_no(v: Option<bool>, yes: &str, no: &str) -> String {
    match v {
        Some(true) => yes.to_string(),
        Some(false) => no.to_string(),
        None => "not established".to_string(),
    }
}

pub fn table(target: &str, ev: &TlsEvidence, took: Duration) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{target}  (probed in {:.2} s)\n", took.as_secs_f64());
    let _ = writeln!(o, "Protocols");
    for p in &ev.protocols {
        let _ = writeln!(
            o,
            "  {:<8} {}",
            p.protocol.name(),
            if p.offered { "offered" } else { "not offered" }
        );
    }
    for p in ev.protocols.iter().filter(|p| p.offered) {
        let order = match p.server_order {
            Some(true) => "server's order",
            Some(false) => "client's order",
            None => "order not determined",
        };
        let _ = writeln!(o, "\n{} cipher suites ({order})", p.protocol.name());
        for s in &p.suites {
            let classes: Vec<String> = s.classes.iter().map(|c| c.name().to_string()).collect();
            let _ = writeln!(
                o,
                "  0x{:04X}  {:<48} {:<32} {}",
                s.id,
                s.iana,
                s.openssl.as_deref().unwrap_or("-"),
                classes.join(",")
            );
        }
    }
    let groups = match &ev.groups {
        Some(g) if g.is_empty() => "none".to_string(),
        Some(g) => g
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        None => "not established".to_string(),
    };
    let _ = writeln!(o, "\nKey exchange groups: {groups}");
    let _ = writeln!(
        o,
        "DHE prime: {}",
        ev.dhe_bits
            .map(|b| format!("{b} bits"))
            .unwrap_or_else(|| "no DHE".into())
    );
    let _ = writeln!(
        o,
        "Secure renegotiation: {}",
        yes_no(ev.secure_renegotiation, "supported", "NOT supported")
    );
    let _ = writeln!(
        o,
        "TLS compression: {}",
        yes_no(ev.compression, "ACCEPTED (CRIME)", "refused")
    );
    let fb = match ev.fallback_scsv {
        Some(FallbackScsv::Enforced) => "enforced",
        Some(FallbackScsv::Sentinel) => "ignored, but RFC 8446 downgrade sentinel set",
        Some(FallbackScsv::Ignored) => "IGNORED (downgrade possible)",
        Some(FallbackScsv::NotApplicable) => "n/a (one protocol version)",
        None => "not established",
    };
    let _ = writeln!(o, "TLS_FALLBACK_SCSV: {fb}");
    let _ = writeln!(o, "\nCertificate chain ({} certificates)", ev.chain.len());
    for (i, der) in ev.chain.iter().enumerate() {
        match crate::checks::CertFacts::parse(der) {
            Ok(f) => {
                let _ = writeln!(
                    o,
                    "  #{i} {}\n      issuer {}\n      {:?} {} bits, {}, valid {} .. {}",
                    f.subject,
                    f.issuer,
                    f.key,
                    f.key_bits.map(|b| b.to_string()).unwrap_or("?".into()),
                    f.signature,
                    day(f.not_before),
                    day(f.not_after)
                );
            }
            Err(e) => {
                let _ = writeln!(o, "  #{i} {e}");
            }
        }
    }
    o
}

fn day(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| crate::waiver::format_date(t.date()))
        .unwrap_or_else(|_| unix.to_string())
}
