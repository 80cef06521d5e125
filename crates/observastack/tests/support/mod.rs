//! Scaffolding shared by the tests that start real binaries and real databases.
//! Each test file uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A binary built beside `observastack` by the workspace build.
pub fn bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_observastack")).with_file_name(name);
    assert!(path.exists(), "{} is missing: build the whole workspace (`cargo test --workspace`)", path.display());
    path
}

/// A port free right now on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Drops `name` if a previous run left it, then creates it empty (for a database a test names
/// itself; a per-test one is a `test_support::TestDb`).
pub async fn recreate_database(name: &str) {
    test_support::drop_database(name).await.unwrap();
    test_support::create_database(name).await.unwrap();
}

/// A child process killed when the test ends, however it ends.
pub struct Proc(pub Child);

impl Proc {
    /// SIGTERM and wait (a service flushes buffered telemetry on the way out); returns what
    /// it wrote to a piped stdout.
    pub fn stop(mut self) -> String {
        kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "process did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut out = String::new();
        if let Some(mut stdout) = self.0.stdout.take() {
            std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
        }
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
