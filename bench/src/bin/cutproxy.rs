//! A TCP proxy for `bench/chaos.sh` that cuts or resets the network between one weir process
//! and Postgres on command: `cutproxy PORT` forwards a new loopback port (printed on the first
//! line) to `127.0.0.1:PORT` and reads `cut`, `reset` and `heal` lines on its standard input
//! (see `weir_testkit::CutProxy`). It exits at the end of its input.

use std::io::BufRead;
use std::net::SocketAddr;

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other("usage: cutproxy PORT"))?;
    let proxy = weir_testkit::CutProxy::start(SocketAddr::from(([127, 0, 0, 1], port)))?;
    println!("{}", proxy.port());
    for line in std::io::stdin().lock().lines() {
        match line?.trim() {
            "cut" => proxy.cut(),
            "reset" => proxy.reset(),
            "heal" => proxy.heal(),
            other => eprintln!("cutproxy: unknown command `{other}` (cut, reset, heal)"),
        }
    }
    Ok(())
}
