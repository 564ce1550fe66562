//! Creates a log in /dev/shm (or the temporary directory), appends, reopens and reads back.

use daxlog::{Log, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::tempdir_in(base)?;
    let path = dir.path().join("journal.dax");
    let log = Log::create(&path, &Options::new().capacity(16 << 20))?;
    println!(
        "created {} ({}), persistence {}",
        path.display(),
        log.uuid(),
        log.persistence()
    );
    for i in 0..1000u32 {
        log.append(format!("op {i}: set key{i} = {}", i * 7).as_bytes())?;
    }
    log.append_batch(&[b"txn begin", b"txn put", b"txn commit"])?;
    drop(log);
    let log = Log::open(&path, &Options::new())?;
    let r = log.recovery();
    println!(
        "recovered {} entries (last LSN {:?}) in {:?}, torn bytes {}",
        r.entries, r.last_lsn, r.duration, r.torn_bytes
    );
    println!(
        "LSN 42: {}",
        String::from_utf8_lossy(&log.read(42).unwrap().payload)
    );
    Ok(())
}
