//! Issue 11, finding 8: anyone who can reach the port could lock every
//! client out with idle TCP connections that never speak TLS (the
//! connection slots were taken before the handshake and held for 10 s).
//! Now pending handshakes have a pool of their own, a new connection evicts
//! the oldest pending one, and a connection slot is taken only after a
//! client certificate has been verified.

use std::io::Read as _;
use std::net::TcpStream;
use std::time::Duration;

use vault_e2e::{checkout, json_of, put, Appliance, Options};

/// This process holds 1,100 sockets: raise its open-files limit if the
/// machine's default is lower.
fn enough_descriptors(n: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    if cur.current.is_some_and(|c| c < n) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: cur.maximum,
                maximum: cur.maximum,
            },
        )
        .expect("raise the open-files limit");
    }
}

#[test]
fn idle_connections_without_tls_do_not_lock_out_a_client_with_a_certificate() {
    enough_descriptors(4096);
    let a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    assert_eq!(put(&writer, "svc/db", "alpha", false).status, 200);

    // More idle connections than limits.max_connections (1,024 by default).
    let target = format!("127.0.0.1:{}", a.port);
    let idle: Vec<TcpStream> = (0..1100)
        .map(|i| TcpStream::connect(&target).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();

    // The PAM server with a certificate still gets its value.
    let r = checkout(&pam, "svc/db");
    assert_eq!(r.status, 200, "{}", a.log());
    assert_eq!(json_of(&r)["value"], "alpha");

    // And the flood was shed: all but the pending pool (256) were closed by
    // the appliance (read gives end of file or a reset).
    let mut closed = 0;
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            _ => {}
        }
    }
    assert!(
        closed >= 1100 - 256,
        "only {closed} of 1,100 idle connections were closed"
    );
    // The daemon is still healthy.
    assert_eq!(checkout(&pam, "svc/db").status, 200);
}
