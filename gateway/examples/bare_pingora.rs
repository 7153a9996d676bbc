//! The ceiling popgate is measured against: pingora 0.9 + rustls doing only
//! what every mTLS reverse proxy must (verify the client certificate against
//! the CA and CRLs, speak HTTP/1.1 and h2, forward to one upstream) and
//! nothing popgate adds (identity, admission, quota, audit, metrics).
//!
//! `bench/gateway_vs_nginx.py` runs it beside nginx and popgate so popgate's
//! own per-request cost is the difference between two rows of one run.
//!
//! ```sh
//! cargo run --release -p gateway --example bare_pingora -- \
//!     --listen 127.0.0.1:8443 --upstream 127.0.0.1:8080 --threads 2 \
//!     --cert server.pem --key server.key --client-ca ca.pem [--crl crl.pem]
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::{HttpPeer, ProxyHttp, Result, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

struct Args {
    listen: String,
    upstream: String,
    threads: usize,
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    crls: Vec<PathBuf>,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut listen = None;
    let mut upstream = None;
    let mut threads = 2;
    let mut cert = None;
    let mut key = None;
    let mut client_ca = None;
    let mut crls = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value),
            "--upstream" => upstream = Some(value),
            "--threads" => {
                threads = value
                    .parse()
                    .map_err(|e| format!("--threads {value}: {e}"))?
            }
            "--cert" => cert = Some(value),
            "--key" => key = Some(value),
            "--client-ca" => client_ca = Some(value),
            "--crl" => crls.push(value.into()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let need = |v: Option<_>, name: &str| v.ok_or_else(|| format!("{name} is required"));
    Ok(Args {
        listen: need(listen, "--listen")?,
        upstream: need(upstream, "--upstream")?,
        threads,
        cert: need(cert, "--cert")?.into(),
        key: need(key, "--key")?.into(),
        client_ca: need(client_ca, "--client-ca")?.into(),
        crls,
    })
}

fn verifier(args: &Args) -> std::result::Result<TlsSettings, String> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&args.client_ca)
        .map_err(|e| format!("{}: {e}", args.client_ca.display()))?
    {
        let c = c.map_err(|e| format!("{}: {e}", args.client_ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", args.client_ca.display()))?;
    }
    let mut crls = Vec::new();
    for path in &args.crls {
        for c in CertificateRevocationListDer::pem_file_iter(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
        {
            crls.push(c.map_err(|e| format!("{}: {e}", path.display()))?);
        }
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .with_crls(crls)
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let path = |p: &PathBuf| p.to_str().map(str::to_owned).ok_or("non-UTF-8 path");
    let mut tls = TlsSettings::intermediate(&path(&args.cert)?, &path(&args.key)?)
        .map_err(|e| format!("server certificate: {e}"))?;
    tls.set_client_cert_verifier(verifier);
    tls.enable_h2();
    Ok(tls)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bare_pingora: {e}");
            std::process::exit(2);
        }
    };
    let tls = match verifier(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("bare_pingora: {e}");
            std::process::exit(2);
        }
    };
    let run_dir = std::env::temp_dir().join(format!("bare-pingora-{}", std::process::id()));
    let conf = ServerConf {
        threads: args.threads,
        pid_file: run_dir.join("pid").to_string_lossy().into_owned(),
        upgrade_sock: run_dir.join("upgrade.sock").to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        Bare {
            upstream: args.upstream.clone(),
        },
    );
    proxy.add_tls_with_settings(&args.listen, None, tls);
    server.add_service(proxy);
    server.run_forever();
}
