//! The one way the project writes a whole file that must survive a crash:
//! keys, certificates, verdicts, audit seals and indexes. A crash never
//! leaves a half-written file (nor does a reader such as popgate's admission
//! step ever see one): write to a temporary name, fsync, rename, fsync the
//! directory so the rename itself is durable. Secret (and audit) files are
//! created with mode 0600 from the first byte.

use std::io::Write;
use std::path::Path;

pub fn write(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp~");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = secret;
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
