//! A plain file write-ahead log on the ordinary file system: `write` of the entry's bytes
//! (header, payload, padding: what daxlog stores) appended to a file, then `fdatasync`.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;

use crate::common::*;
use crate::roofline::{batch_image, image};

pub const ROW: &str = "file WAL: write + fdatasync (ext4, temp dir)";

pub fn run(cfg: &Cfg) {
    let path = cfg.tmp.join("wal.log");
    let ops = if cfg.smoke {
        3
    } else {
        env_usize("DAXLOG_BENCH_WAL_OPS").unwrap_or(100)
    };
    let mut cases: Vec<(String, usize, usize, Vec<u8>)> = sizes()
        .into_iter()
        .map(|s| (append_case(s), s, 1, image(s, 1, 0)))
        .collect();
    cases.push((
        batch_case(),
        BATCH_N * BATCH_PAYLOAD,
        BATCH_N,
        batch_image(),
    ));
    for (case, bytes, entries, img) in cases {
        let file: RefCell<Option<File>> = RefCell::new(None);
        let ns = time_reps(
            cfg.reps,
            ops,
            || {
                // A new, empty file for every repetition: appends grow it, as a WAL's do.
                *file.borrow_mut() = None;
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .expect("create WAL file");
                f.sync_all().expect("fsync");
                *file.borrow_mut() = Some(f);
            },
            || {
                let mut b = file.borrow_mut();
                let f = b.as_mut().expect("file");
                f.write_all(&img).expect("write");
                f.sync_data().expect("fdatasync");
            },
        );
        emit(ROW, &case, bytes, entries, &ns);
    }
    let _ = std::fs::remove_file(&path);
}
