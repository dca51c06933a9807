//! How to reach Redis, and how long and how much to wait for it.

use std::time::Duration;

use meter_core::Secret;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

/// How to reach Redis and the bounds on waiting for it.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// One node, `redis://[user:password@]host:port[/db]` (`rediss://` for
    /// TLS), or a Redis Cluster by some of its nodes,
    /// `redis+cluster://[user:password@]host:port[,host:port…]`
    /// (`rediss+cluster://` for TLS); a [`Secret`] because it may hold a password.
    pub url: Secret,
    /// Multiplexed connections kept open to each node; each carries many calls at once.
    pub connections: u32,
    /// How long a call waits for a connection before it fails `Unavailable`.
    pub connect_timeout: Duration,
    /// How long a batch of commands waits for Redis's replies before its
    /// calls fail `OutcomeUnknown` (they may have been applied).
    pub response_timeout: Duration,
    /// Most commands queued or awaiting their reply; past it, calls fail
    /// `Overloaded` at once and nothing is sent.
    pub max_pending: usize,
    /// Replicas every change must reach (`WAIT`) before its call is
    /// answered; a change they do not confirm within `wait_timeout` fails
    /// `OutcomeUnknown`. 0: answer once the master has it.
    pub wait_replicas: u32,
    /// How long a batch of changes waits for the replicas. Short: while it
    /// waits, later commands on the same connection wait too.
    pub wait_timeout: Duration,
    /// Certificates for a `rediss://` URL: a CA trusted instead of the
    /// system's, a client certificate.
    pub tls: Option<RedisTls>,
}

/// PEM certificates for TLS to Redis, read at start.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// The CA certificates to trust instead of the system's (a private CA,
    /// such as a Memorystore instance's server CA).
    pub ca: Option<Vec<u8>>,
    /// A client certificate and its key, for Redis with `tls-auth-clients yes`.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl RedisTls {
    /// Whether the Redis client can use the certificates: `Err` names the
    /// part (`ca`, `client`) that it cannot, and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let build = |certificates| {
            redis::Client::build_with_tls("rediss://127.0.0.1:6380", certificates)
                .map(drop)
                .map_err(|e| e.to_string())
        };
        if let Some(ca) = &self.ca {
            build(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            })
            .map_err(|e| ("ca", e))?;
        }
        if self.client.is_some() {
            build(
                Self {
                    ca: None,
                    client: self.client.clone(),
                }
                .certificates(),
            )
            .map_err(|e| ("client", e))?;
        }
        Ok(())
    }

    /// The certificates as the Redis client takes them.
    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }
}

impl RedisConfig {
    /// The defaults of `meterd` for the Redis at `url`.
    pub fn new(url: impl Into<Secret>) -> Self {
        Self {
            url: url.into(),
            connections: 4,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(1),
            max_pending: 2048,
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(50),
            tls: None,
        }
    }
}

/// Where Redis is: one node, or the seed nodes of a cluster.
#[derive(Clone, Debug)]
pub(crate) enum Deployment {
    /// One Redis (or a proxy that speaks for several).
    Node(Box<ConnectionInfo>),
    /// A Redis Cluster, reached first through these nodes; the others are
    /// learnt from the cluster and share the first seed's user, password
    /// and TLS settings.
    Cluster(Vec<ConnectionInfo>),
}

impl RedisConfig {
    /// Whether [`RedisConfig::url`] speaks TLS (`rediss://`,
    /// `rediss+cluster://`, any spelling the client takes as TLS).
    pub fn uses_tls(&self) -> Result<bool, InvalidRedisUrl> {
        let tls = |info: &ConnectionInfo| matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        Ok(match self.deployment()? {
            Deployment::Node(info) => tls(&info),
            Deployment::Cluster(seeds) => seeds.iter().all(tls),
        })
    }

    /// Where [`RedisConfig::url`] points; `Err` says why it does not parse.
    pub(crate) fn deployment(&self) -> Result<Deployment, InvalidRedisUrl> {
        let url = self.url.expose();
        let invalid = |e: redis::RedisError| InvalidRedisUrl(e.to_string());
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let node_scheme = match scheme {
            "redis+cluster" => "redis",
            "rediss+cluster" => "rediss",
            _ => {
                return url
                    .into_connection_info()
                    .map(|info| Deployment::Node(Box::new(info)))
                    .map_err(invalid);
            }
        };
        // [user:password@]host:port[,host:port…][/0][?…]; the hosts end at
        // the first `/` or `?` after the credentials.
        let (credentials, rest) = match rest.rfind('@') {
            Some(at) => rest.split_at(at + 1),
            None => ("", rest),
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (hosts, tail) = rest.split_at(end);
        let seeds = hosts
            .split(',')
            .map(|host| {
                if host.is_empty() {
                    return Err(InvalidRedisUrl("a cluster URL lists an empty host".into()));
                }
                let info = format!("{node_scheme}://{credentials}{host}{tail}")
                    .into_connection_info()
                    .map_err(invalid)?;
                if info.redis_settings().db() != 0 {
                    return Err(InvalidRedisUrl(
                        "a Redis Cluster has only database 0".into(),
                    ));
                }
                Ok(info)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Deployment::Cluster(seeds))
    }
}

/// `template` (its user, password, TLS settings) for the node at `host:port`.
pub(crate) fn at_address(template: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match template.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    template.clone().set_addr(addr)
}

/// The Redis URL does not parse; the message says why (never the password).
#[derive(Debug, thiserror::Error)]
#[error(
    "REDIS_URL is not a valid Redis URL ({0}); expected redis://[user:password@]host:port[/db], \
     rediss://… (TLS), or redis+cluster://[user:password@]host:port[,host:port…] for a Redis Cluster"
)]
pub struct InvalidRedisUrl(pub(crate) String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_never_prints_the_url() {
        let config = RedisConfig::new("redis://default:hunter2@cache:6379");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("cache"),
            "{shown}"
        );
    }

    fn seeds(url: &str) -> Result<Vec<String>, String> {
        match RedisConfig::new(url)
            .deployment()
            .map_err(|e| e.to_string())?
        {
            Deployment::Cluster(seeds) => Ok(seeds
                .iter()
                .map(|info| {
                    let settings = info.redis_settings();
                    format!(
                        "{} {:?} {:?}",
                        info.addr(),
                        settings.username(),
                        settings.password()
                    )
                })
                .collect()),
            Deployment::Node(info) => Err(format!("one node: {}", info.addr())),
        }
    }

    #[test]
    fn a_cluster_url_lists_its_seed_nodes_and_shares_the_credentials() {
        assert_eq!(
            seeds("redis+cluster://app:hunter2@10.0.0.1:7000,10.0.0.2:7001"),
            Ok(vec![
                r#"10.0.0.1:7000 Some("app") Some("hunter2")"#.to_owned(),
                r#"10.0.0.2:7001 Some("app") Some("hunter2")"#.to_owned(),
            ])
        );
        assert_eq!(
            seeds("rediss+cluster://cache.internal:6380/0"),
            Ok(vec!["cache.internal:6380 None None".to_owned()]),
        );
        assert!(seeds("redis://127.0.0.1:6379").is_err_and(|e| e.starts_with("one node")));
        for bad in [
            "redis+cluster://a:1,,b:2",
            "redis+cluster://a:1/3",
            "redis+cluster://",
        ] {
            let error = seeds(bad).expect_err(bad);
            assert!(error.contains("redis+cluster://"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_learnt_node_keeps_the_seeds_tls_and_credentials() {
        let Ok(Deployment::Cluster(seeds)) =
            RedisConfig::new("rediss+cluster://app:pw@seed:7000").deployment()
        else {
            panic!("a cluster URL");
        };
        let node = at_address(&seeds[0], "10.0.0.9", 7005);
        assert!(
            matches!(node.addr(), ConnectionAddr::TcpTls { host, port: 7005, .. } if host == "10.0.0.9")
        );
        assert_eq!(node.redis_settings().password(), Some("pw"));
    }
}
