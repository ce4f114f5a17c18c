//! A loopback TCP proxy that injects real network faults.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sys;
use crate::TestDb;

/// How long the accept loop sleeps in `poll` before re-checking the shutdown flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// Upstream connect timeout.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on a condition-variable wait, as a safety net against a missed wake-up.
const MAX_WAIT: Duration = Duration::from_millis(100);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One proxied connection: the sockets to shut down when it is severed.
#[derive(Debug, Default)]
struct Conn {
    closed: AtomicBool,
    /// Gone silent: the server side is shut, the client side open, nothing forwarded.
    silent: AtomicBool,
    /// The client socket first, then the server socket.
    sockets: Mutex<Vec<TcpStream>>,
}

impl Conn {
    /// Tracks `sock` so that [`Conn::close`] shuts it down. Returns `false` (and shuts `sock`
    /// down) if the connection is already closed.
    fn add_socket(&self, sock: io::Result<TcpStream>) -> bool {
        let Ok(sock) = sock else {
            self.close();
            return false;
        };
        let mut sockets = lock(&self.sockets);
        if self.closed.load(Ordering::SeqCst) {
            let _ = sock.shutdown(Shutdown::Both);
            return false;
        }
        sockets.push(sock);
        true
    }

    /// Shuts both directions of every socket down: blocked reads return, both peers see EOF.
    fn close(&self) {
        let sockets = lock(&self.sockets);
        self.closed.store(true, Ordering::SeqCst);
        for s in sockets.iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Shuts the server side down and forwards nothing more, leaving the client side open.
    fn silence(&self) {
        let sockets = lock(&self.sockets);
        self.silent.store(true, Ordering::SeqCst);
        for s in sockets.iter().skip(1) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn is_silent(&self) -> bool {
        self.silent.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    shutdown: AtomicBool,
    refuse: AtomicBool,
    blackhole: AtomicBool,
    connect_delay: Mutex<Duration>,
    accepted: AtomicUsize,
    open: AtomicUsize,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Signalled when the blackhole is lifted, on sever and on shutdown.
    wake: Condvar,
    wake_lock: Mutex<()>,
}

impl Shared {
    fn notify(&self) {
        let _g = lock(&self.wake_lock);
        self.wake.notify_all();
    }

    fn close_all(&self) {
        let conns: Vec<Arc<Conn>> = lock(&self.conns).values().cloned().collect();
        for c in conns {
            c.close();
        }
        self.notify();
    }

    /// Blocks while the blackhole is on. Returns `false` if the connection was closed (or the
    /// proxy shut down) meanwhile.
    fn wait_while_blackholed(&self, conn: &Conn) -> bool {
        let alive = |s: &Shared| !conn.is_closed() && !s.shutdown.load(Ordering::SeqCst);
        if !self.blackhole.load(Ordering::SeqCst) {
            return alive(self);
        }
        let mut g = lock(&self.wake_lock);
        while self.blackhole.load(Ordering::SeqCst) && alive(self) {
            g = self
                .wake
                .wait_timeout(g, MAX_WAIT)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        alive(self)
    }

    /// Sleeps for `d` unless the connection is closed first. Returns whether it is still alive.
    fn delay(&self, conn: &Conn, d: Duration) -> bool {
        let alive = |s: &Shared| !conn.is_closed() && !s.shutdown.load(Ordering::SeqCst);
        let deadline = Instant::now() + d;
        let mut g = lock(&self.wake_lock);
        while alive(self) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            g = self
                .wake
                .wait_timeout(g, (deadline - now).min(MAX_WAIT))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        alive(self)
    }
}

/// Unregisters a connection once both of its pump threads are done.
#[derive(Debug)]
struct ConnGuard {
    id: u64,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.conn.close();
        lock(&self.shared.conns).remove(&self.id);
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A loopback TCP proxy in front of a server that injects real network faults.
///
/// It listens on `127.0.0.1:<ephemeral port>` and forwards every accepted connection to the
/// target. It runs on its own std threads (an accept thread plus two pump threads per
/// connection, all blocking on their sockets, so idle proxies use no CPU), never on an async
/// executor. Faults:
///
/// * [`sever_all`](FaultProxy::sever_all): every open connection is shut down at once.
/// * [`set_refuse`](FaultProxy::set_refuse): new connections are accepted and immediately
///   reset (`SO_LINGER` 0, so the client gets a RST before any byte).
/// * [`set_blackhole`](FaultProxy::set_blackhole): nothing is forwarded; clients hang until
///   their own timeouts fire.
/// * [`set_connect_delay`](FaultProxy::set_connect_delay): connect latency.
///
/// Dropping the proxy stops accepting, closes every connection and lets all threads exit.
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("target", &self.shared.target)
            .field("refuse", &self.shared.refuse.load(Ordering::Relaxed))
            .field("blackhole", &self.shared.blackhole.load(Ordering::Relaxed))
            .field("connect_delay", &*lock(&self.shared.connect_delay))
            .field("accepted", &self.accepted())
            .field("open_connections", &self.open_connections())
            .finish()
    }
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `target`.
    pub fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            shutdown: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            blackhole: AtomicBool::new(false),
            connect_delay: Mutex::new(Duration::ZERO),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(String::from("momoko-proxy-acc"))
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(FaultProxy {
            shared,
            addr,
            acceptor: Some(acceptor),
        })
    }

    /// The port the proxy listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// DSN of `db` through the proxy: `db.dsn()` with `host=127.0.0.1 port=<proxy port>`.
    pub fn dsn_for(&self, db: &TestDb) -> String {
        let mut info = db.cluster().conninfo(db.name());
        info.remove("hostaddr");
        info.set("host", "127.0.0.1");
        info.set("port", &self.port().to_string());
        info.to_string()
    }

    /// Closes every currently proxied connection at once: both sockets are shut down, so the
    /// client and the server both see EOF. New connections are unaffected.
    pub fn sever_all(&self) {
        self.shared.close_all();
    }

    /// Every currently proxied connection goes silent for good, as when a server's host vanishes
    /// without a FIN or a RST (a crash behind a firewall, a dropped NAT mapping): the server
    /// sees its socket closed and ends the session, while the client sees nothing at all — its
    /// socket stays open, what it sends is dropped, and no byte ever comes back. Only its own
    /// timeouts (or a liveness check) can tell it the connection is gone. New connections are
    /// unaffected.
    pub fn silence_all(&self) {
        let conns: Vec<Arc<Conn>> = lock(&self.shared.conns).values().cloned().collect();
        for c in conns {
            c.silence();
        }
    }

    /// While `true`, new connections are accepted and immediately closed with `SO_LINGER` 0, so
    /// the client sees a reset before any byte (psql: "server closed the connection
    /// unexpectedly" / "Connection reset by peer"). Existing connections are unaffected.
    /// Refused connections are not counted by [`accepted`](FaultProxy::accepted).
    pub fn set_refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    /// While `true`, nothing is forwarded:
    ///
    /// * new connections are accepted but never connected upstream; every byte they send is
    ///   dropped and they stay black-holed forever (until [`sever_all`](FaultProxy::sever_all)
    ///   or the proxy is dropped), even after the blackhole is lifted;
    /// * existing connections stop forwarding: bytes are held (not lost) and delivered when the
    ///   blackhole is lifted, like a network partition that heals.
    ///
    /// When set back to `false`, newly accepted connections work again.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::SeqCst);
        if !on {
            self.shared.notify();
        }
    }

    /// Delay before each new connection is connected upstream (so before its first byte is
    /// forwarded): connect latency. `Duration::ZERO` disables it.
    pub fn set_connect_delay(&self, d: Duration) {
        *lock(&self.shared.connect_delay) = d;
    }

    /// Number of connections accepted (and proxied or black-holed) so far; refused ones are not
    /// counted.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Number of connections currently open through the proxy.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // The accept loop re-checks the flag at least every ACCEPT_POLL.
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // Every connection registered by the (now finished) accept loop is closed; handlers that
        // add a socket later see the connection closed and shut that socket down too.
        self.shared.close_all();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.shutdown.load(Ordering::SeqCst) {
        match sys::poll_readable(listener, ACCEPT_POLL) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
        }
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // E.g. EMFILE: back off instead of spinning.
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        if shared.refuse.load(Ordering::SeqCst) {
            let _ = sys::set_linger_zero(&client);
            drop(client);
            continue;
        }
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);

        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let conn = Arc::new(Conn::default());
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        shared.open.fetch_add(1, Ordering::SeqCst);
        lock(&shared.conns).insert(id, Arc::clone(&conn));
        let guard = Arc::new(ConnGuard {
            id,
            conn,
            shared: Arc::clone(shared),
        });
        if !guard.conn.add_socket(client.try_clone()) {
            continue;
        }
        let blackholed = shared.blackhole.load(Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name(String::from("momoko-proxy-c2s"))
            .spawn(move || handle(client, guard, blackholed));
        // On failure the closure (and with it the guard) is dropped: the connection is closed.
        drop(spawned);
    }
}

/// Runs one connection: connects upstream, then pumps client→server on this thread and
/// server→client on a second one.
fn handle(client: TcpStream, guard: Arc<ConnGuard>, blackholed: bool) {
    let shared = Arc::clone(&guard.shared);
    if blackholed {
        discard(client);
        return;
    }
    let delay = *lock(&shared.connect_delay);
    if !delay.is_zero() && !shared.delay(&guard.conn, delay) {
        return;
    }
    if guard.conn.is_closed() || shared.shutdown.load(Ordering::SeqCst) {
        return;
    }
    let server = match TcpStream::connect_timeout(&shared.target, UPSTREAM_CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(_) => {
            // The target is down: the client sees a reset, as it would without the proxy.
            let _ = sys::set_linger_zero(&client);
            return;
        }
    };
    let _ = server.set_nodelay(true);
    if !guard.conn.add_socket(server.try_clone()) {
        return;
    }
    let (Ok(server_read), Ok(client_write)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    let back_guard = Arc::clone(&guard);
    let spawned = std::thread::Builder::new()
        .name(String::from("momoko-proxy-s2c"))
        .spawn(move || pump(server_read, client_write, &back_guard, false));
    if spawned.is_err() {
        return;
    }
    pump(client, server, &guard, true);
}

/// Reads from a black-holed client and drops everything until the connection is closed.
fn discard(mut client: TcpStream) {
    let mut buf = vec![0u8; 8192];
    loop {
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Copies `from` → `to` until EOF, an error, or the connection is closed; holds data while the
/// blackhole is on. When one direction ends, the whole connection is closed — except on a
/// silenced connection, whose client side stays open (its bytes are read and dropped) until the
/// client closes it.
fn pump(mut from: TcpStream, mut to: TcpStream, guard: &ConnGuard, from_client: bool) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if guard.conn.is_silent() {
            if from_client {
                continue;
            }
            return;
        }
        if !guard.shared.wait_while_blackholed(&guard.conn) {
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            if guard.conn.is_silent() && from_client {
                continue;
            }
            break;
        }
    }
    if guard.conn.is_silent() && !from_client {
        return;
    }
    guard.conn.close();
}
