//! The ceiling popgate is measured against: pingora 0.9 + rustls doing only
//! what every mTLS reverse proxy must (verify the client certificate against
//! the CA and CRLs, speak HTTP/1.1 and h2, forward to one upstream) and
//! nothing popgate adds (identity, admission, quota, audit, metrics).
//!
//! `bench/gateway_vs_nginx.py` runs it beside nginx and popgate so popgate's
//! own per-request cost is the difference between two rows of one run.
//!
//! With `--no-resumption` TLS session resumption is off, as on nginx and
//! popgate in the benchmark: pingora's `TlsSettings` keeps rustls' default
//! (two stateful TLS 1.3 tickets per handshake, which oha's client uses, so
//! its "new connection" handshakes skip both ECDSA operations). That mode
//! listens on plain TCP and runs the same rustls handshake in a minimal
//! application in front of the same proxy, with its own `ServerConfig`.
//!
//! ```sh
//! cargo run --release -p gateway --example bare_pingora -- \
//!     --listen 127.0.0.1:8443 --upstream 127.0.0.1:8080 --threads 2 \
//!     --cert server.pem --key server.key --client-ca ca.pem [--crl crl.pem] [--no-resumption]
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::tls::{Acceptor, TlsSettings};
use pingora::prelude::{HttpPeer, ProxyHttp, Result, Session};
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::Stream;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
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

/// The handshake in front of the proxy, for `--no-resumption`.
struct Handshake<A> {
    acceptor: Acceptor,
    app: Arc<A>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Handshake<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let tcp = stream.into_any().downcast::<TcpStream>().ok()?;
        let tls = pingora::protocols::tls::server::handshake(&self.acceptor, *tcp)
            .await
            .ok()?;
        self.app.process_new(Box::new(tls), shutdown).await
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
    resumption: bool,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut listen = None;
    let mut upstream = None;
    let mut threads = 2;
    let mut cert = None;
    let mut key = None;
    let mut client_ca = None;
    let mut crls = Vec::new();
    let mut resumption = true;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--no-resumption" {
            resumption = false;
            continue;
        }
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
        resumption,
    })
}

fn verifier(
    args: &Args,
) -> std::result::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
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
    WebPkiClientVerifier::builder(Arc::new(roots))
        .with_crls(crls)
        .build()
        .map_err(|e| format!("client verifier: {e}"))
}

/// pingora's own TLS listener settings (resumption as rustls defaults it).
fn tls_settings(args: &Args) -> std::result::Result<TlsSettings, String> {
    let path = |p: &PathBuf| p.to_str().map(str::to_owned).ok_or("non-UTF-8 path");
    let mut tls = TlsSettings::intermediate(&path(&args.cert)?, &path(&args.key)?)
        .map_err(|e| format!("server certificate: {e}"))?;
    tls.set_client_cert_verifier(verifier(args)?);
    tls.enable_h2();
    Ok(tls)
}

/// The same, as a rustls `ServerConfig` with resumption off.
fn server_config(args: &Args) -> std::result::Result<Arc<rustls::ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(&args.cert)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", args.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&args.key)
        .map_err(|e| format!("{}: {e}", args.key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| e.to_string())?
    .with_client_cert_verifier(verifier(args)?)
    .with_single_cert(chain, key)
    .map_err(|e| format!("server certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
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
    let bare = Bare {
        upstream: args.upstream.clone(),
    };
    let built = if args.resumption {
        tls_settings(&args).map(|tls| {
            let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, bare);
            proxy.add_tls_with_settings(&args.listen, None, tls);
            server.add_service(proxy);
        })
    } else {
        server_config(&args).map(|config| {
            let app = Handshake {
                acceptor: Acceptor::from_server_config(config),
                app: Arc::new(pingora::proxy::http_proxy(&server.configuration, bare)),
            };
            let mut service =
                pingora::services::listening::Service::new("bare pingora".to_owned(), app);
            service.add_tcp(&args.listen);
            server.add_service(service);
        })
    };
    if let Err(e) = built {
        eprintln!("bare_pingora: {e}");
        std::process::exit(2);
    }
    server.run_forever();
}
