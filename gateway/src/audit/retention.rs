//! Deleting local segments once the store provably holds them.
//!
//! Never by default (`audit.store.delete_shipped_after_days`). A sealed
//! segment is deleted only when it is older than the setting, fully
//! shipped, and read back from the store identical byte for byte, with
//! its seal and every one of its checkpoints there too. Its seal stays
//! (a few hundred bytes): the local chain still links across the gap, and
//! `audit verify` reports the segment as shipped-and-deleted rather than
//! missing.

use std::time::Duration;

use super::segment;
use super::ship::{ShipError, Shipper};
use super::store::Store;

fn local(message: String) -> ShipError {
    ShipError {
        kind: "local",
        message,
    }
}

fn store_err(e: tokio_postgres::Error) -> ShipError {
    super::store::StoreError::from(e).into()
}

/// Deletes the segments that qualify; returns how many were deleted.
pub async fn prune(
    shipper: &Shipper,
    store: &mut Store,
    after: Duration,
) -> Result<u64, ShipError> {
    let dir = shipper.dir();
    let Some(current) = shipper.current_segment() else {
        return Ok(0);
    };
    let instance = shipper.instance().as_str();
    let mut deleted = 0;
    for n in segment::list(dir).map_err(|e| local(format!("{}: {e}", dir.display())))? {
        if n >= current {
            break;
        }
        let seal_path = segment::seal_path(dir, n);
        let age = std::fs::metadata(&seal_path)
            .and_then(|m| m.modified())
            .map_err(|e| local(format!("{}: {e}", seal_path.display())))?
            .elapsed()
            .unwrap_or_default();
        if age < after {
            break; // later segments were sealed later still
        }
        let seal: segment::Seal = serde_json::from_slice(
            &std::fs::read(&seal_path)
                .map_err(|e| local(format!("{}: {e}", seal_path.display())))?,
        )
        .map_err(|e| local(format!("{}: {e}", seal_path.display())))?;
        let seg_path = segment::segment_path(dir, n);
        let bytes =
            std::fs::read(&seg_path).map_err(|e| local(format!("{}: {e}", seg_path.display())))?;
        let rows = store
            .client
            .query(
                "SELECT line FROM popgate_audit_records WHERE instance = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq",
                &[&instance, &(seal.first_seq as i64), &(seal.last_seq as i64)],
            )
            .await
            .map_err(store_err)?;
        let mut in_store = Vec::with_capacity(bytes.len());
        for r in &rows {
            in_store.extend_from_slice(r.get::<_, &str>(0).as_bytes());
            in_store.push(b'\n');
        }
        let stored_seal = store
            .client
            .query_opt(
                "SELECT body FROM popgate_audit_seals WHERE instance = $1 AND segment = $2",
                &[&instance, &(n as i64)],
            )
            .await
            .map_err(store_err)?
            .and_then(|r| serde_json::from_str::<segment::Seal>(r.get::<_, &str>(0)).ok());
        let ckpt_path = segment::checkpoint_path(dir, n);
        let local_checkpoints = segment::read_checkpoints(&ckpt_path)
            .map_err(|e| local(format!("{}: {e}", ckpt_path.display())))?
            .len() as i64;
        let stored_checkpoints: i64 = store
            .client
            .query_one(
                "SELECT count(*) FROM popgate_audit_checkpoints WHERE instance = $1 AND segment = $2",
                &[&instance, &(n as i64)],
            )
            .await
            .map_err(store_err)?
            .get(0);
        if in_store != bytes
            || stored_seal.as_ref() != Some(&seal)
            || stored_checkpoints != local_checkpoints
        {
            tracing::error!(
                segment = %seg_path.display(),
                "not deleting a shipped audit segment: the store's copy differs (run `popgate audit verify --store`)"
            );
            return Err(local(format!(
                "{}: the store's copy of this segment differs from it; kept",
                seg_path.display()
            )));
        }
        for p in [
            seg_path.clone(),
            segment::index_path(dir, n),
            ckpt_path.clone(),
        ] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(local(format!("{}: cannot delete: {e}", p.display()))),
            }
        }
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| local(format!("{}: {e}", dir.display())))?;
        tracing::info!(segment = %seg_path.display(), records = seal.records, "deleted a local audit segment the store holds (its seal is kept)");
        deleted += 1;
    }
    Ok(deleted)
}
