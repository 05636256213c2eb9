//! A SQLite VFS that writes each commit's WAL frames with one system call.
//!
//! SQLite appends a frame to the WAL with two writes (its 24-byte header,
//! then the page), so a commit that changes seven pages costs fourteen
//! `pwrite`s; on the deliveries file that was a tenth of the runtime's CPU.
//! This shim over the default VFS ("unix") gathers contiguous writes to a
//! WAL file in memory and writes them at once when the commit frame's page
//! arrives. That write happens before the commit returns, and before SQLite
//! publishes the new frames in the wal-index, so no connection (of this
//! process or another) can learn of frames that are not in the file, and a
//! process that dies after a commit returned has lost nothing.
//!
//! Any other operation on the WAL through this handle (read, sync, size,
//! truncate, locks, close...) writes what is gathered first. Files other
//! than WAL files pass straight through.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name connections open with (`Connection::open_with_flags_and_vfs`).
const NAME: &CStr = c"clawdbot-wal-batch";
const FRAME_HEADER: usize = 24;
/// A transaction larger than this (an index build, a big prune) is written
/// in pieces of about this size rather than held whole in memory.
const GATHER_LIMIT: usize = 1 << 20;

/// The VFS's name, registering it on first use. `None` when SQLite has no
/// default VFS to wrap (never on the platforms we build for).
pub fn name() -> Option<&'static str> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        // SAFETY: the default VFS lives as long as the process; the struct
        // handed to SQLite is leaked, so it does too.
        unsafe {
            let inner = ffi::sqlite3_vfs_find(std::ptr::null());
            if inner.is_null() {
                return false;
            }
            let mut vfs = *inner;
            vfs.szOsFile = (std::mem::size_of::<File>() as c_int) + (*inner).szOsFile;
            vfs.pNext = std::ptr::null_mut();
            vfs.zName = NAME.as_ptr();
            vfs.pAppData = inner.cast();
            vfs.xOpen = Some(x_open);
            // The other methods are the default VFS's own; they ignore the
            // VFS pointer they are given (only its open reads `pAppData`).
            ffi::sqlite3_vfs_register(Box::into_raw(Box::new(vfs)), 0) == ffi::SQLITE_OK
        }
    });
    ok.then(|| NAME.to_str().expect("ASCII name"))
}

/// Our part of an open file; the default VFS's file follows it in the same
/// allocation (SQLite allocates `szOsFile` bytes).
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    wal: bool,
    /// Bytes gathered for the file at offset `at`, not written yet.
    gathered: Vec<u8>,
    at: i64,
    /// Where the page of the last commit frame header goes.
    commit_page_at: Option<i64>,
}

#[cfg(test)]
thread_local! {
    /// Writes made to WAL files by this thread (tests count them).
    static WAL_WRITES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl File {
    fn real_methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: set by the default VFS's successful open, and kept until
        // its close.
        unsafe { &*(*self.real).pMethods }
    }

    /// Writes what is gathered. On failure it is dropped: SQLite fails the
    /// transaction, and frames it never published are never read.
    fn flush(&mut self) -> c_int {
        self.commit_page_at = None;
        if self.gathered.is_empty() {
            return ffi::SQLITE_OK;
        }
        let rc = self.write_through(self.gathered.as_ptr().cast(), self.gathered.len(), self.at);
        self.gathered.clear();
        rc
    }

    fn write_through(&self, data: *const c_void, len: usize, offset: i64) -> c_int {
        #[cfg(test)]
        if self.wal {
            WAL_WRITES.with(|n| n.set(n.get() + 1));
        }
        let Ok(len) = c_int::try_from(len) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        match self.real_methods().xWrite {
            // SAFETY: `data` holds `len` bytes; `real` is an open file.
            Some(write) => unsafe { write(self.real, data, len, offset) },
            None => ffi::SQLITE_IOERR_WRITE,
        }
    }

    /// One write to a WAL file: gathered, or written through where it must
    /// be (see the module doc).
    fn write(&mut self, data: &[u8], offset: i64) -> c_int {
        if !self.gathered.is_empty() && offset != self.at + self.gathered.len() as i64 {
            let rc = self.flush();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        let commit_header = data.len() == FRAME_HEADER && data[4..8] != [0; 4];
        if commit_header && self.gathered.is_empty() {
            // Either a one-page commit, or checksums rewritten after a
            // cache spill (each header after a read, the commit's last):
            // nothing may wait for a page that will not come.
            self.commit_page_at = Some(offset + FRAME_HEADER as i64);
            return self.write_through(data.as_ptr().cast(), data.len(), offset);
        }
        if self.gathered.is_empty() {
            self.at = offset;
        }
        self.gathered.extend_from_slice(data);
        if commit_header {
            self.commit_page_at = Some(offset + FRAME_HEADER as i64);
            return ffi::SQLITE_OK;
        }
        if self.commit_page_at == Some(offset) || self.gathered.len() >= GATHER_LIMIT {
            return self.flush();
        }
        ffi::SQLITE_OK
    }
}

/// # Safety
/// `f` is a file this VFS opened.
unsafe fn file<'a>(f: *mut ffi::sqlite3_file) -> &'a mut File {
    unsafe { &mut *f.cast::<File>() }
}

/// Writes what is gathered, then calls the default VFS's method.
macro_rules! flushed {
    ($f:expr, $method:ident $(, $arg:expr)*) => {{
        let me = unsafe { file($f) };
        let rc = me.flush();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        match me.real_methods().$method {
            Some(m) => unsafe { m(me.real $(, $arg)*) },
            None => ffi::SQLITE_IOERR,
        }
    }};
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    f: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    unsafe {
        let inner = (*vfs).pAppData.cast::<ffi::sqlite3_vfs>();
        let real = f
            .cast::<u8>()
            .add(std::mem::size_of::<File>())
            .cast::<ffi::sqlite3_file>();
        let Some(open) = (*inner).xOpen else {
            (*f).pMethods = std::ptr::null();
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = open(inner, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK || (*real).pMethods.is_null() {
            // SQLite does not close a file whose open failed.
            (*f).pMethods = std::ptr::null();
            return if rc == ffi::SQLITE_OK {
                ffi::SQLITE_CANTOPEN
            } else {
                rc
            };
        }
        std::ptr::write(
            f.cast::<File>(),
            File {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                real,
                wal: flags & ffi::SQLITE_OPEN_WAL != 0,
                gathered: Vec::new(),
                at: 0,
                commit_page_at: None,
            },
        );
        rc
    }
}

unsafe extern "C" fn x_close(f: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let me = file(f);
        let flushed = me.flush();
        let rc = match me.real_methods().xClose {
            Some(close) => close(me.real),
            None => ffi::SQLITE_OK,
        };
        std::ptr::drop_in_place(f.cast::<File>());
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            rc
        }
    }
}

unsafe extern "C" fn x_read(
    f: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    n: c_int,
    at: i64,
) -> c_int {
    flushed!(f, xRead, buf, n, at)
}

unsafe extern "C" fn x_write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    n: c_int,
    at: i64,
) -> c_int {
    let me = unsafe { file(f) };
    if !me.wal || n <= 0 {
        return me.write_through(buf, n.max(0) as usize, at);
    }
    // SAFETY: SQLite hands `n` readable bytes.
    let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), n as usize) };
    me.write(data, at)
}

unsafe extern "C" fn x_truncate(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flushed!(f, xTruncate, size)
}

unsafe extern "C" fn x_sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    flushed!(f, xSync, flags)
}

unsafe extern "C" fn x_file_size(f: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flushed!(f, xFileSize, size)
}

unsafe extern "C" fn x_lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    flushed!(f, xLock, level)
}

unsafe extern "C" fn x_unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    flushed!(f, xUnlock, level)
}

unsafe extern "C" fn x_check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    flushed!(f, xCheckReservedLock, out)
}

unsafe extern "C" fn x_file_control(
    f: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    flushed!(f, xFileControl, op, arg)
}

unsafe extern "C" fn x_sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    let me = unsafe { file(f) };
    match me.real_methods().xSectorSize {
        Some(m) => unsafe { m(me.real) },
        None => 4096,
    }
}

unsafe extern "C" fn x_device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    let me = unsafe { file(f) };
    match me.real_methods().xDeviceCharacteristics {
        Some(m) => unsafe { m(me.real) },
        None => 0,
    }
}

unsafe extern "C" fn x_shm_map(
    f: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    flushed!(f, xShmMap, region, size, extend, out)
}

unsafe extern "C" fn x_shm_lock(
    f: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    flushed!(f, xShmLock, offset, n, flags)
}

unsafe extern "C" fn x_shm_barrier(f: *mut ffi::sqlite3_file) {
    let me = unsafe { file(f) };
    // Only database files get here, and they gather nothing.
    let _ = me.flush();
    if let Some(m) = me.real_methods().xShmBarrier {
        unsafe { m(me.real) }
    }
}

unsafe extern "C" fn x_shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    flushed!(f, xShmUnmap, delete)
}

unsafe extern "C" fn x_fetch(
    f: *mut ffi::sqlite3_file,
    at: i64,
    n: c_int,
    out: *mut *mut c_void,
) -> c_int {
    flushed!(f, xFetch, at, n, out)
}

unsafe extern "C" fn x_unfetch(f: *mut ffi::sqlite3_file, at: i64, p: *mut c_void) -> c_int {
    flushed!(f, xUnfetch, at, p)
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags, params};

    /// A directory of its own, removed afterwards.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new() -> Self {
            let dir = std::env::temp_dir()
                .join(format!("clawdbot-wal-vfs-{:08x}", rand::random::<u32>()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn open(path: &std::path::Path) -> Connection {
        let c = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), name().unwrap())
            .unwrap();
        c.execute_batch(
            "PRAGMA page_size = 1024; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v BLOB NOT NULL);",
        )
        .unwrap();
        c
    }

    fn count_and_sum(c: &Connection) -> (i64, i64) {
        c.query_row(
            "SELECT count(*), coalesce(sum(length(v)), 0) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    /// What a process that died now would leave: the database and its WAL
    /// as they are in the files, opened elsewhere (SQLite rebuilds the
    /// wal-index from the WAL, checking every frame's checksum).
    fn crash_image(dir: &Scratch, name: &str) -> Connection {
        let to = dir.path().join(name);
        std::fs::create_dir_all(&to).unwrap();
        for f in ["d.db", "d.db-wal"] {
            std::fs::copy(dir.path().join(f), to.join(f)).unwrap();
        }
        let c = Connection::open(to.join("d.db")).unwrap();
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        c
    }

    fn writes<R>(f: impl FnOnce() -> R) -> (R, usize) {
        let before = WAL_WRITES.with(|n| n.get());
        let r = f();
        (r, WAL_WRITES.with(|n| n.get()) - before)
    }

    fn insert(c: &mut Connection, from: usize, rows: usize, len: usize) {
        let tx = c.transaction().unwrap();
        for i in from..from + rows {
            tx.execute(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                params![
                    format!("key-{:08}", i.wrapping_mul(2_654_435_761) % 100_000_007),
                    vec![7u8; len]
                ],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn a_commit_of_many_pages_is_one_write_that_lands_before_it_returns() {
        let dir = Scratch::new();
        let path = dir.path().join("d.db");
        let mut w = open(&path);
        // The plain VFS reads through its own descriptor: it sees only what
        // reached the file.
        let r = Connection::open(&path).unwrap();
        let mut total = 0;
        for round in 0..40 {
            let ((), n) = writes(|| insert(&mut w, total, 6, 300));
            total += 6;
            // Six rows at random keys touch several pages; all in one write.
            assert_eq!(n, 1, "round {round}: {n} writes for one commit");
            assert_eq!(count_and_sum(&r), (total as i64, total as i64 * 300));
        }
        // A process that dies now loses nothing.
        let image = crash_image(&dir, "crashed");
        assert_eq!(count_and_sum(&image), (total as i64, total as i64 * 300));
        drop(w);
    }

    #[test]
    fn spilled_and_rewritten_frames_and_rollbacks_leave_a_sound_file() {
        let dir = Scratch::new();
        let path = dir.path().join("d.db");
        let mut w = open(&path);
        // A tiny cache makes a big transaction spill frames to the WAL
        // before its commit, then overwrite them (checksums rewritten).
        w.execute_batch("PRAGMA cache_size = 8;").unwrap();
        insert(&mut w, 0, 400, 200);
        {
            let tx = w.transaction().unwrap();
            tx.execute("UPDATE t SET v = zeroblob(250)", []).unwrap();
            tx.execute("UPDATE t SET v = zeroblob(260)", []).unwrap();
            tx.commit().unwrap();
        }
        assert_eq!(
            count_and_sum(&crash_image(&dir, "rewritten")),
            (400, 400 * 260)
        );
        {
            // Spilled, then rolled back: none of it may appear.
            let tx = w.transaction().unwrap();
            tx.execute("UPDATE t SET v = zeroblob(900)", []).unwrap();
            tx.execute("DELETE FROM t WHERE rowid % 2 = 0", []).unwrap();
            drop(tx);
        }
        insert(&mut w, 1000, 3, 100);
        let r = Connection::open(&path).unwrap();
        assert_eq!(count_and_sum(&r), (403, 400 * 260 + 300));
        assert_eq!(
            count_and_sum(&crash_image(&dir, "rolled-back")),
            (403, 400 * 260 + 300)
        );
        // The WAL copied into the database and started over, then more.
        w.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        insert(&mut w, 2000, 5, 100);
        assert_eq!(
            count_and_sum(&crash_image(&dir, "restarted")),
            (408, 400 * 260 + 800)
        );
        drop(w);
    }

    #[test]
    fn files_other_than_the_wal_pass_straight_through() {
        let dir = Scratch::new();
        let path = dir.path().join("rollback.db");
        let mut c =
            Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), name().unwrap())
                .unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = DELETE; CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB NOT NULL);",
        )
        .unwrap();
        let ((), n) = writes(|| insert(&mut c, 0, 50, 100));
        assert_eq!(n, 0, "no WAL, nothing gathered");
        let r = Connection::open(&path).unwrap();
        assert_eq!(count_and_sum(&r), (50, 5000));
    }
}
