//! Starts a real `redis-server` on a free port with its own temp dir.

use std::{
    env,
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// How long a starting redis-server may take to answer.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// How many free ports a server is tried on before the test gives up.
const START_TRIES: usize = 5;

/// A redis-server owned by one test; killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts a redis-server on a free loopback port, with persistence off.
    ///
    /// Panics, saying how to install it, when `redis-server` is not on PATH
    /// (or at `$REDIS_SERVER`): these tests never skip silently.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts one as [`RedisServer::start`] does, with extra settings such as
    /// `["--maxmemory-policy", "allkeys-lru"]`.
    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::start_with_fresh(|| extra_args.iter().map(|a| (*a).to_owned()).collect())
    }

    /// Starts one as [`RedisServer::start_with`] does, with settings made
    /// anew for each try (such as a free port of their own): a port taken
    /// by a test running beside this one between the pick and the bind
    /// makes the server exit, and it is tried again on another.
    pub fn start_with_fresh(extra_args: impl Fn() -> Vec<String>) -> Self {
        let mut last = String::new();
        for _ in 0..START_TRIES {
            let dir = tempfile::Builder::new()
                .prefix("meter-redis-")
                .tempdir()
                .unwrap_or_else(|e| panic!("cannot create a temp dir for redis-server: {e}"));
            let mut server = Self {
                child: None,
                port: free_port(),
                dir,
                extra_args: extra_args(),
            };
            match server.launch() {
                Ok(()) => return server,
                Err(exited) => last = exited,
            }
        }
        panic!("redis-server did not start in {START_TRIES} tries; the last: {last}")
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection of its own, for a test to read or write keys directly.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap_or_else(|e| panic!("bad redis-server URL {}: {e}", self.url()))
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("redis-server on port {} does not answer: {e}", self.port))
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Closes every client connection but the caller's (`CLIENT KILL TYPE
    /// normal`), as a failover or a proxy restart does; returns how many.
    pub async fn drop_clients(&self, conn: &mut redis::aio::MultiplexedConnection) -> i64 {
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .query_async(conn)
            .await
            .unwrap_or_else(|e| panic!("CLIENT KILL on port {}: {e}", self.port))
    }

    /// Freezes the server with SIGSTOP: connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("redis-server is running").to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill {signal} {pid}: {e}"));
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Kills the server (as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: persistence is off).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(exited) = self.launch() {
            panic!("{exited}");
        }
    }

    /// Runs the server; `Err` when it exited at start (its port was taken).
    fn launch(&mut self) -> Result<(), String> {
        let binary = env::var_os("REDIS_SERVER")
            .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from);
        let child = Command::new(&binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e}. The tests need a real Redis: install it with \
                     `sudo apt-get install -y redis-server` (Debian/Ubuntu) or `brew install redis`, \
                     or set REDIS_SERVER to the path of a redis-server binary",
                    binary.display()
                )
            });
        let pid = child.id();
        self.child = Some(child);
        self.wait_ready(pid)
    }

    /// Waits until the server answers on its port, as itself: another
    /// test's server on a port this one failed to take does not count.
    fn wait_ready(&mut self, pid: u32) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited at start with {status}",
                    self.port
                ));
            }
            if answers_as(self.port, pid) {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within {READY_WITHIN:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a frozen server too.
        self.stop();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

/// Whether the server on `port` answers `INFO server` as process `pid`.
fn answers_as(port: u16, pid: u32) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"INFO server\r\n").is_err() {
        return false;
    }
    let wanted = format!("process_id:{pid}\r\n");
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    // The reply is one bulk string of a few kB; read until it holds the
    // process id or its end.
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&reply);
        if text.contains(&wanted) {
            return true;
        }
        if text.contains("process_id:") && text.ends_with("\r\n\r\n") {
            break;
        }
    }
    false
}
