//! A TCP proxy a test can cut: a network partition between one process and a server.
//!
//! [`CutProxy::start`] listens on a loopback port and forwards every connection to a target.
//! [`CutProxy::cut`] stops every byte in both directions while keeping the sockets open, as a
//! broken network does: neither end sees an error, the server keeps the sessions (and their
//! locks) it thinks alive, and the client's statements hang. [`CutProxy::heal`] lets the held
//! bytes through again, as TCP's retransmissions would. New connections made during a cut are
//! accepted and then held the same way. [`CutProxy::reset`] is the other kind of failure: every
//! connection is closed at both ends (the server ends the sessions, releasing their locks) and
//! new ones are refused until [`CutProxy::heal`].

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Whether traffic flows; pumps wait on the condition variable while it does not.
#[derive(Default)]
struct Gate {
    cut: Mutex<bool>,
    changed: Condvar,
    /// New connections are closed at once.
    refusing: std::sync::atomic::AtomicBool,
    /// Every forwarded socket, for [`CutProxy::reset`].
    open: Mutex<Vec<TcpStream>>,
}

impl Gate {
    fn wait_open(&self) {
        let mut cut = self.cut.lock().unwrap_or_else(PoisonError::into_inner);
        while *cut {
            cut = self
                .changed
                .wait(cut)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn set(&self, value: bool) {
        *self.cut.lock().unwrap_or_else(PoisonError::into_inner) = value;
        self.changed.notify_all();
    }
}

/// A running proxy; its threads end with the test process.
pub struct CutProxy {
    port: u16,
    gate: Arc<Gate>,
}

impl CutProxy {
    /// Forwards a new loopback port to `target`.
    ///
    /// # Errors
    /// The port cannot be bound.
    pub fn start(target: SocketAddr) -> std::io::Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let gate = Arc::new(Gate::default());
        let accept_gate = Arc::clone(&gate);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if accept_gate
                    .refusing
                    .load(std::sync::atomic::Ordering::SeqCst)
                {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    accept_gate
                        .open
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend([c, s]);
                }
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let gate = Arc::clone(&accept_gate);
                    std::thread::spawn(move || pump(from, to, &gate));
                }
            }
        });
        Ok(CutProxy { port, gate })
    }

    /// A proxy in front of the server of `url` (`scheme://[user@]host:port/...`), and the same
    /// URL through it.
    ///
    /// # Errors
    /// A URL without a reachable `host:port`, or a port that cannot be bound.
    pub fn for_url(url: &str) -> std::io::Result<(CutProxy, String)> {
        use std::net::ToSocketAddrs;
        let bad = || std::io::Error::other(format!("no host:port in {url}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, hp)) => (format!("{user}@"), hp),
            None => (String::new(), authority),
        };
        let target = host_port.to_socket_addrs()?.next().ok_or_else(bad)?;
        let proxy = CutProxy::start(target)?;
        let through = format!("{scheme}://{user}127.0.0.1:{}/{path}", proxy.port());
        Ok((proxy, through))
    }

    /// The loopback port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops all traffic (connections stay open).
    pub fn cut(&self) {
        self.gate.set(true);
    }

    /// Closes every connection at both ends and refuses new ones.
    pub fn reset(&self) {
        self.gate
            .refusing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self
            .gate
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Lets traffic flow again, held bytes first, and accepts connections again.
    pub fn heal(&self) {
        self.gate
            .refusing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.gate.set(false);
    }
}

/// Copies `from` to `to` until either closes, holding every chunk while the gate is cut.
fn pump(mut from: TcpStream, mut to: TcpStream, gate: &Gate) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        gate.wait_open();
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        gate.wait_open();
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_cut_holds_bytes_until_healed() {
        let server = TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = server.local_addr().expect("addr");
        std::thread::spawn(move || {
            for mut s in server.incoming().flatten() {
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).is_ok() {
                    let _ = s.write_all(&b);
                }
            }
        });
        let proxy = CutProxy::start(target).expect("proxy");
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).expect("connect");
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let mut b = [0u8; 1];
        c.write_all(b"a").expect("write");
        c.read_exact(&mut b).expect("echo before the cut");
        assert_eq!(&b, b"a");
        proxy.cut();
        c.write_all(b"b").expect("write during the cut");
        assert!(c.read_exact(&mut b).is_err(), "a byte crossed the cut");
        proxy.heal();
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.read_exact(&mut b).expect("echo after healing");
        assert_eq!(&b, b"b");
    }
}
