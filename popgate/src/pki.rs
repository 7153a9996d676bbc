//! `popgate pki …`: the development PKI.

use std::path::Path;

use certs::pki::DevPki;

use crate::{subjects, Failure};

/// `pki init`: a CA, a server certificate, an empty CRL, one certificate
/// per agency, and the service keys (audit seal and HMAC, verdict signing).
pub fn init(dir: &Path, agencies: &Path, days: u32) -> Result<(), Failure> {
    let registry = subjects(agencies)?;
    let pki = DevPki::create(dir)?;
    certs::signing::ensure_service_keys(dir).map_err(|e| Failure {
        code: 1,
        message: e.to_string(),
    })?;
    // Issue everything before printing anything, so a closed stdout
    // can never leave a half-made PKI behind.
    let mut issued = Vec::new();
    for a in &registry.agencies {
        issued.push((a.id.clone(), pki.issue_agency(&a.pki_subject(), days)?));
    }
    println!("CA:     {}", pki.ca_cert_path().display());
    println!(
        "audit:  {} (seal), {} (citizen HMAC)",
        dir.join("audit-seal.key").display(),
        dir.join("audit-hmac.key").display()
    );
    println!(
        "verdicts: {} (popscan signs), {} (popgate admission trusts)",
        dir.join("verdict-signing.key").display(),
        dir.join("verdict-signing.pub").display()
    );
    println!("server: {}", pki.server_cert_path().display());
    println!("CRL:    {}", pki.crl_path().display());
    for (id, cert) in issued {
        println!(
            "agency {:<16} {} (serial {})",
            id,
            cert.cert_path.display(),
            cert.serial_hex
        );
    }
    Ok(())
}

/// `pki issue`: (re-)issue one agency's client certificate.
pub fn issue(dir: &Path, agency: &str, agencies: &Path, days: u32) -> Result<(), Failure> {
    let registry = subjects(agencies)?;
    let a = registry.agency(agency).ok_or_else(|| Failure {
        code: 2,
        message: format!("{}: no agency with id {agency:?}", agencies.display()),
    })?;
    let pki = DevPki::open(dir)?;
    let issued = pki.issue_agency(&a.pki_subject(), days)?;
    println!(
        "{} (serial {}, valid until {})",
        issued.cert_path.display(),
        issued.serial_hex,
        issued.not_after
    );
    Ok(())
}

/// `pki revoke`: revoke a certificate this PKI issued and re-sign the CRL.
pub fn revoke(dir: &Path, cert: &Path) -> Result<(), Failure> {
    let pki = DevPki::open(dir)?;
    let r = pki.revoke(cert)?;
    println!(
        "revoked serial {} (agency {}); CRL re-signed: {}",
        r.serial_hex,
        r.agency,
        r.crl_path.display()
    );
    Ok(())
}
