//! The cluster's audit store: every instance's records, seals and signed
//! checkpoints in one PostgreSQL database, for search across instances and
//! for verification off the hosts that wrote them.
//!
//! The local log stays the write-ahead record; the store is a copy that
//! [`super::ship`] fills. Nothing on the request path talks to it.
//!
//! Layout (created by [`Store::ensure_schema`], idempotent):
//! - `popgate_audit_records`: one row per record, the exact line (so its
//!   hash is checked from the bytes the gateway wrote) plus the columns
//!   search filters on. Range-partitioned by day, so old days can be
//!   detached or archived as a whole; indexed by citizen reference, agency
//!   and request id. The key includes `time` because a partitioned table's
//!   keys must include the partition key; `(instance, seq)` is unique by
//!   the shipping protocol (each instance's high-water mark moves only by
//!   compare-and-set) and `verify --store` checks it.
//! - `popgate_audit_seals`, `popgate_audit_checkpoints`: the signed
//!   statements, verbatim.
//! - `popgate_audit_instances`: each instance's high-water mark.

use std::collections::HashSet;

use serde::Deserialize;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls};

use super::instance::InstanceId;

/// The `audit.store` section of `gateway.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStoreConfig {
    /// `postgres://user:password@host:port/db` (libpq URL or key=value).
    pub url: String,
    /// PEM CA bundle that signed the database's certificate: the
    /// connection is then TLS, the server's certificate and name verified
    /// (libpq's `verify-full`). Without it the connection is plain TCP.
    #[serde(default)]
    pub ca: Option<String>,
    /// Records per shipping transaction.
    #[serde(default = "default_batch")]
    pub batch_records: usize,
    /// Delete a sealed local segment this long after it was sealed
    /// (`90d`, `12h`, `30m`, `45s`), once it is shipped and read back
    /// identical from the store. Absent: local segments are never deleted.
    #[serde(default)]
    pub delete_shipped_after: Option<String>,
}

fn default_batch() -> usize {
    2000
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    pub ca: Option<std::path::PathBuf>,
    pub batch_records: usize,
    pub delete_shipped_after: Option<std::time::Duration>,
}

impl StoreConfig {
    /// `resolve` turns a path in the config into one relative to it.
    pub fn from_raw(
        raw: &RawStoreConfig,
        resolve: impl Fn(&str) -> std::path::PathBuf,
    ) -> Result<Self, String> {
        let parsed = raw
            .url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| format!("audit.store.url: {e}"))?;
        let ca = raw.ca.as_deref().map(resolve);
        if let Some(ca) = &ca {
            tls_config(ca).map_err(|e| format!("audit.store.ca: {e}"))?;
        } else if parsed.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(
                "audit.store.url asks for TLS (sslmode=require): set audit.store.ca to the CA that signed the database's certificate, so it is verified"
                    .into(),
            );
        }
        if !(1..=50_000).contains(&raw.batch_records) {
            return Err("audit.store.batch_records must be between 1 and 50000".into());
        }
        let delete_shipped_after = raw
            .delete_shipped_after
            .as_deref()
            .map(parse_age)
            .transpose()
            .map_err(|e| format!("audit.store.delete_shipped_after: {e}"))?;
        Ok(StoreConfig {
            url: raw.url.clone(),
            ca,
            batch_records: raw.batch_records,
            delete_shipped_after,
        })
    }
}

/// `90d`, `12h`, `30m`, `45s`: a whole number and a unit, at least 1 s.
fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?}: expected a whole number and a unit, e.g. 90d, 12h, 30m, 45s");
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let secs = match unit {
        'd' => n.checked_mul(86_400),
        'h' => n.checked_mul(3_600),
        'm' => n.checked_mul(60),
        's' => Some(n),
        _ => return Err(bad()),
    }
    .filter(|s| *s > 0)
    .ok_or_else(bad)?;
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::{parse_age, redact};
    use std::time::Duration;

    #[test]
    fn ages_have_a_unit_and_are_never_zero() {
        assert_eq!(parse_age("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_age("2s"), Ok(Duration::from_secs(2)));
        for bad in [
            "",
            "d",
            "0d",
            "90",
            "1.5d",
            "-1d",
            "1w",
            "99999999999999999999d",
        ] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://popgate:s3cret@db:5432/audit"),
            "postgres://popgate@db:5432/audit"
        );
        assert_eq!(
            redact("host=db user=popgate password=s3cret dbname=audit"),
            "host=db user=popgate dbname=audit"
        );
        assert_eq!(redact("postgres://db/audit"), "postgres://db/audit");
    }
}

/// An error with its causes (tokio-postgres puts the TLS or socket error
/// in `source`, and "error connecting to server" alone says little).
fn cause(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((auth, host)) => {
                let user = auth.split(':').next().unwrap_or("");
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_owned(),
        },
        None => url
            .split_whitespace()
            .filter(|kv| !kv.starts_with("password="))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("audit store {url}: cannot connect: {cause}")]
    Connect { url: String, cause: String },
    #[error("audit store: {0}")]
    Query(String),
    /// The store's history of an instance and the local log disagree.
    #[error("{0}")]
    Conflict(String),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Query(match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        })
    }
}

/// A connection to the audit store.
pub struct Store {
    pub client: Client,
    /// Day partitions known to exist, so each is created once.
    partitions: HashSet<String>,
}

/// Version of the layout below; a newer one in the store is refused.
const SCHEMA_VERSION: i32 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS popgate_audit_schema (version int NOT NULL);
CREATE TABLE IF NOT EXISTS popgate_audit_instances (
    instance     text PRIMARY KEY,
    shipped_seq  bigint NOT NULL,
    shipped_hash text NOT NULL,
    shipped_time timestamptz,
    updated      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS popgate_audit_records (
    instance    text NOT NULL,
    seq         bigint NOT NULL,
    segment     bigint NOT NULL,
    time        timestamptz NOT NULL,
    kind        text NOT NULL,
    request_id  text NOT NULL,
    agency      text,
    citizen_ref text,
    line        text NOT NULL,
    PRIMARY KEY (instance, seq, time)
) PARTITION BY RANGE (time);
CREATE INDEX IF NOT EXISTS popgate_audit_records_citizen
    ON popgate_audit_records (citizen_ref, time) WHERE citizen_ref IS NOT NULL;
CREATE INDEX IF NOT EXISTS popgate_audit_records_agency ON popgate_audit_records (agency, time);
CREATE INDEX IF NOT EXISTS popgate_audit_records_request ON popgate_audit_records (request_id);
CREATE TABLE IF NOT EXISTS popgate_audit_seals (
    instance text NOT NULL,
    segment  bigint NOT NULL,
    body     text NOT NULL,
    PRIMARY KEY (instance, segment)
);
CREATE TABLE IF NOT EXISTS popgate_audit_checkpoints (
    instance text NOT NULL,
    segment  bigint NOT NULL,
    n        bigint NOT NULL,
    seq      bigint NOT NULL,
    body     text NOT NULL,
    PRIMARY KEY (instance, segment, n)
);
";

/// Serialises DDL between instances starting together (`CREATE … IF NOT
/// EXISTS` alone races).
const DDL_LOCK: i64 = 0x706f_7067_6174_6501;

/// A rustls client config trusting only the CA bundle at `ca`.
fn tls_config(ca: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("{}: {e}", ca.display()))?
    {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", ca.display()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Store {
    /// Connects over plain TCP, or over TLS verified against `ca`.
    pub async fn connect(url: &str, ca: Option<&std::path::Path>) -> Result<Store, StoreError> {
        let mut config: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| StoreError::Connect {
                    url: redact(url),
                    cause: e.to_string(),
                })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config.application_name("popgate");
        let failed = |cause: String| StoreError::Connect {
            url: redact(url),
            cause,
        };
        let client = match ca {
            Some(ca) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let tls =
                    tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(ca).map_err(failed)?);
                let (client, connection) =
                    config.connect(tls).await.map_err(|e| failed(cause(&e)))?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "audit store connection ended");
                    }
                });
                client
            }
            None => {
                let (client, connection) =
                    config.connect(NoTls).await.map_err(|e| failed(cause(&e)))?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "audit store connection ended");
                    }
                });
                client
            }
        };
        // Record times are UTC; dates given to search mean UTC days.
        client
            .batch_execute("SET TIME ZONE 'UTC'; SET client_min_messages = warning")
            .await?;
        Ok(Store {
            client,
            partitions: HashSet::new(),
        })
    }

    /// Creates the tables if they are not there; refuses a store laid out
    /// by a newer popgate.
    pub async fn ensure_schema(&mut self) -> Result<(), StoreError> {
        let tx = self.client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])
            .await?;
        tx.batch_execute(SCHEMA).await?;
        let row = tx
            .query_opt("SELECT max(version) FROM popgate_audit_schema", &[])
            .await?;
        match row.and_then(|r| r.get::<_, Option<i32>>(0)) {
            None => {
                tx.execute(
                    "INSERT INTO popgate_audit_schema (version) VALUES ($1)",
                    &[&SCHEMA_VERSION],
                )
                .await?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::Query(format!(
                    "the store's schema is version {v}, newer than this popgate's ({SCHEMA_VERSION}): upgrade popgate"
                )))
            }
            Some(_) => {}
        }
        tx.commit().await?;
        Ok(())
    }

    /// Creates the day partitions `days` (`YYYY-MM-DD`, UTC) that are not
    /// known to exist yet.
    pub async fn ensure_partitions(&mut self, days: &[String]) -> Result<(), StoreError> {
        let missing: Vec<&String> = days
            .iter()
            .filter(|d| !self.partitions.contains(*d))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let tx = self.client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])
            .await?;
        for day in &missing {
            let date = certs::dates::parse_date(day)
                .ok_or_else(|| StoreError::Query(format!("record day {day:?} is not a date")))?;
            let next = date
                .next_day()
                .ok_or_else(|| StoreError::Query(format!("no day after {day}")))?;
            let name = format!("popgate_audit_records_{}", day.replace('-', ""));
            // Names and bounds come from a parsed date, never from input text.
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF popgate_audit_records FOR VALUES FROM ('{date}') TO ('{next}')"
            ))
            .await?;
        }
        tx.commit().await?;
        self.partitions.extend(missing.into_iter().cloned());
        Ok(())
    }
}

/// What the store holds of one instance: its high-water mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipped {
    pub seq: u64,
    pub hash: String,
}

pub async fn shipped(client: &Client, instance: &InstanceId) -> Result<Shipped, StoreError> {
    let row = client
        .query_opt(
            "SELECT shipped_seq, shipped_hash FROM popgate_audit_instances WHERE instance = $1",
            &[&instance.as_str()],
        )
        .await?;
    Ok(match row {
        Some(r) => Shipped {
            seq: r.get::<_, i64>(0) as u64,
            hash: r.get(1),
        },
        None => Shipped {
            seq: 0,
            hash: super::record::GENESIS.to_owned(),
        },
    })
}

/// One record as it goes into the store.
pub struct Row {
    pub seq: u64,
    pub segment: u64,
    pub time: String,
    pub kind: &'static str,
    pub request_id: String,
    pub agency: Option<String>,
    pub citizen_ref: Option<String>,
    pub line: String,
}

/// A signed statement as it goes into the store.
pub struct Signed {
    pub segment: u64,
    pub n: u64,
    pub seq: u64,
    pub body: String,
}

/// One shipping step, applied in one transaction.
pub struct Batch<'a> {
    pub instance: &'a InstanceId,
    /// The high-water mark this batch continues from.
    pub from: &'a Shipped,
    pub rows: Vec<Row>,
    /// The hash of the last row (the new high-water mark).
    pub last_hash: String,
    pub checkpoints: Vec<Signed>,
    /// (segment, seal JSON) of segments whose every record is shipped.
    pub seals: Vec<(u64, String)>,
}

/// Applies a batch: records, checkpoints and seals, and the instance's
/// high-water mark moved from `from` by compare-and-set, all or nothing.
/// Another shipper having moved the mark (two processes shipping one
/// instance, or one id shared by two gateways) aborts the batch.
pub async fn apply(store: &mut Store, batch: Batch<'_>) -> Result<(), StoreError> {
    let mut days: Vec<String> = batch
        .rows
        .iter()
        .filter_map(|r| r.time.get(..10).map(str::to_owned))
        .collect();
    days.sort();
    days.dedup();
    store.ensure_partitions(&days).await?;
    let instance = batch.instance.as_str();
    let tx = store.client.transaction().await?;
    if let Some(last) = batch.rows.last() {
        // Binary COPY: the cheapest way into PostgreSQL for the server as
        // well as for us (no statement to parse, no arrays to unpack), and
        // it routes rows to their day partitions like an INSERT.
        let sink = tx
            .copy_in(
                "COPY popgate_audit_records
                     (instance, seq, segment, time, kind, request_id, agency, citizen_ref, line)
                 FROM STDIN BINARY",
            )
            .await?;
        let writer = BinaryCopyInWriter::new(
            sink,
            &[
                Type::TEXT,
                Type::INT8,
                Type::INT8,
                Type::TIMESTAMPTZ,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
            ],
        );
        futures_util::pin_mut!(writer);
        for r in &batch.rows {
            let time = super::record::parse_time(&r.time).ok_or_else(|| {
                StoreError::Query(format!(
                    "record seq {}: time {:?} is not RFC 3339",
                    r.seq, r.time
                ))
            })?;
            writer
                .as_mut()
                .write(&[
                    &instance,
                    &(r.seq as i64),
                    &(r.segment as i64),
                    &time,
                    &r.kind,
                    &r.request_id,
                    &r.agency,
                    &r.citizen_ref,
                    &r.line,
                ])
                .await?;
        }
        writer.finish().await?;
        let moved = tx
            .execute(
                "INSERT INTO popgate_audit_instances (instance, shipped_seq, shipped_hash, shipped_time, updated)
                 VALUES ($1, $2, $3, $4::text::timestamptz, now())
                 ON CONFLICT (instance) DO UPDATE
                    SET shipped_seq = excluded.shipped_seq, shipped_hash = excluded.shipped_hash,
                        shipped_time = excluded.shipped_time, updated = now()
                  WHERE popgate_audit_instances.shipped_seq = $5
                    AND popgate_audit_instances.shipped_hash = $6",
                &[
                    &instance,
                    &(last.seq as i64),
                    &batch.last_hash,
                    &last.time,
                    &(batch.from.seq as i64),
                    &batch.from.hash,
                ],
            )
            .await?;
        if moved != 1 {
            return Err(StoreError::Conflict(format!(
                "instance {instance}: the store's high-water mark moved away from seq {} while shipping: another process ships this instance (one audit.instance shared by two gateways?)",
                batch.from.seq
            )));
        }
    }
    for c in &batch.checkpoints {
        tx.execute(
            "INSERT INTO popgate_audit_checkpoints (instance, segment, n, seq, body)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[
                &instance,
                &(c.segment as i64),
                &(c.n as i64),
                &(c.seq as i64),
                &c.body,
            ],
        )
        .await?;
    }
    for (segment, body) in &batch.seals {
        tx.execute(
            "INSERT INTO popgate_audit_seals (instance, segment, body)
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&instance, &(*segment as i64), body],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
