//! The processes a run needs: a redis-server and a release meterd, started
//! on free ports unless the bench is pointed at running ones.

use std::{
    net::{Ipv4Addr, TcpListener},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use meter_api::v1::{GetBalanceRequest, credits_service_client::CreditsServiceClient};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// A meterd child process.
pub struct MeterdProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl MeterdProcess {
    /// Starts `binary` on a free port, on Redis at `redis_url` or on the embedded store.
    pub async fn start(binary: &Path, redis_url: Option<&str>) -> Result<Self, String> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let mut command = Command::new(binary);
        command
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log-filter",
                "warn",
            ])
            .env_remove("REDIS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        if let Some(url) = redis_url {
            command.env("REDIS_URL", url);
        }
        let child = command.spawn().map_err(|e| {
            format!(
                "cannot start {}: {e} (build it with `cargo build --release -p meterd`)",
                binary.display()
            )
        })?;
        let process = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        process.wait_ready().await?;
        Ok(process)
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(channel) = Channel::from_shared(self.endpoint.clone())
                .map_err(|e| e.to_string())?
                .connect()
                .await
            {
                let mut client = CreditsServiceClient::new(channel);
                if client
                    .get_balance(GetBalanceRequest {
                        account_id: "ready".into(),
                    })
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "meterd at {} did not answer within 30 s",
                    self.endpoint
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// meterd's peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Stops it with SIGTERM, as Kubernetes would, and waits for it.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// CPU time (user + system) a process has used so far, from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports these in USER_HZ, 100 per second on every mainstream build.
    Some(Duration::from_millis(ticks * 10))
}
