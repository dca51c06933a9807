//! [`CreditLedger`] on Redis: one script per mutation, one HMGET per read.

use std::time::Duration;

use meter_core::{
    AccountId, CreditBalance, CreditError, CreditLedger, CreditPeriod, DeductCredits,
    DeductOutcome, GrantCredits, Idempotency, Recorded, ResetCredits, ResetSchedule, StoreError,
    Timestamp, credits::total_overflow,
};
use redis::{ErrorKind, ServerErrorKind};

use crate::{
    RedisStore,
    connection::sort_error,
    keys,
    pipeliner::{Pipeliner, server_error},
    scripts::{self, LuaScript},
};

/// The credit ledger on Redis.
#[derive(Clone, Debug)]
pub struct RedisCreditLedger {
    store: RedisStore,
    pipeliner: Pipeliner,
    idempotency_window_ms: u64,
    deduct: LuaScript,
    grant: LuaScript,
    reset: LuaScript,
}

impl RedisCreditLedger {
    /// A ledger on `store` that remembers idempotency keys for `idempotency_window`.
    ///
    /// Must be called within a Tokio runtime: it starts the task that
    /// pipelines the ledger's commands.
    pub fn new(store: RedisStore, idempotency_window: Duration) -> Self {
        Self {
            pipeliner: Pipeliner::start(store.clone()),
            store,
            idempotency_window_ms: u64::try_from(idempotency_window.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            deduct: scripts::deduct(),
            grant: scripts::grant(),
            reset: scripts::reset(),
        }
    }

    /// Runs `script` on the account's keys; `args` follow `now` (as ms and as
    /// stored text) and precede the fingerprint and window, as every credits
    /// script expects.
    async fn run(
        &self,
        script: &LuaScript,
        account: &AccountId,
        idempotency: Option<&Idempotency>,
        now: Timestamp,
        args: &[&str],
    ) -> Result<Vec<String>, StoreError> {
        let command = || {
            let mut command = redis::cmd("EVALSHA");
            command.arg(script.hash());
            match idempotency {
                Some(idem) => command
                    .arg(2)
                    .arg(keys::credits(account))
                    .arg(keys::credits_idempotency(account, &idem.key)),
                None => command.arg(1).arg(keys::credits(account)),
            };
            command.arg(now.as_millis()).arg(now.to_string());
            for arg in args {
                command.arg(*arg);
            }
            command
                .arg(idempotency.map_or("", |i| i.fingerprint.as_str()))
                .arg(self.idempotency_window_ms);
            command
        };
        let reply = match server_error(self.pipeliner.send(command()).await?) {
            // Redis restarted or SCRIPT FLUSH ran: load the script and send
            // again. Both go through the pipeline, so a burst of calls that
            // all met NOSCRIPT reloads in one round trip, not one each.
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                server_error(self.pipeliner.send(script.load_command()).await?)
                    .map_err(sort_error)?;
                server_error(self.pipeliner.send(command()).await?)
            }
            other => other,
        };
        let value = reply.map_err(sort_error)?;
        redis::from_redis_value(value)
            .map_err(|e| StoreError::Protocol(format!("credits script reply: {e}")))
    }

    /// Interprets a script reply: a balance, an idempotency conflict or an overflow.
    fn outcome(
        account: &AccountId,
        idempotency: Option<&Idempotency>,
        amount: i64,
        reply: &[String],
    ) -> Result<Recorded<(bool, CreditBalance)>, CreditError> {
        match reply.first().map(String::as_str) {
            Some("ok") if reply.len() == 10 => {
                let key = keys::credits(account);
                let fields: Vec<Option<&str>> = reply[2..9]
                    .iter()
                    .map(|f| Some(f.as_str()).filter(|f| !f.is_empty()))
                    .collect();
                let balance = parse_balance(&key, &fields)?.unwrap_or_default();
                Ok(Recorded {
                    outcome: (reply[1] == "1", balance),
                    replayed: reply[9] == "1",
                })
            }
            Some("conflict") => Err(CreditError::IdempotencyConflict {
                key: idempotency
                    .map(|i| i.key.as_str().to_owned())
                    .unwrap_or_default(),
            }),
            Some("overflow") => {
                let total = reply
                    .get(1)
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_default();
                Err(total_overflow(total, amount).into())
            }
            _ => Err(
                StoreError::Protocol(format!("unexpected credits script reply {reply:?}")).into(),
            ),
        }
    }
}

/// Builds a balance from the seven [`keys::CREDITS_FIELDS`] values of the hash at `key`;
/// `Ok(None)` when the account has no `total` (it does not exist).
fn parse_balance(key: &str, fields: &[Option<&str>]) -> Result<Option<CreditBalance>, StoreError> {
    let corrupt = |field: &str, value: Option<&str>| StoreError::Corrupt {
        key: key.to_owned(),
        detail: format!("field {field} holds {value:?}"),
    };
    let [total, used, reset, anchor, period, last, trial] = fields else {
        return Err(StoreError::Protocol(format!(
            "expected 7 balance fields, got {}",
            fields.len()
        )));
    };
    let Some(total_text) = total else {
        return Ok(None);
    };
    let number = |field: &str, value: Option<&str>| {
        value
            .unwrap_or("0")
            .parse::<i64>()
            .map_err(|_| corrupt(field, value))
    };
    let time = |field: &str, value: Option<&str>| {
        value
            .map(|v| Timestamp::parse(v).ok_or_else(|| corrupt(field, Some(v))))
            .transpose()
    };
    let schedule = match time("resetDate", *reset)? {
        None => None,
        Some(next_reset) => Some(ResetSchedule {
            anchor: time("resetAnchor", *anchor)?.ok_or_else(|| corrupt("resetAnchor", *anchor))?,
            period: period
                .and_then(|p| p.parse::<CreditPeriod>().ok())
                .ok_or_else(|| corrupt("resetPeriod", *period))?,
            next_reset,
        }),
    };
    Ok(Some(CreditBalance {
        total: number("total", Some(total_text))?,
        used: number("used", *used)?,
        schedule,
        last_update: time("lastUpdate", *last)?,
        trial: matches!(*trial, Some("true" | "1")),
    }))
}

impl CreditLedger for RedisCreditLedger {
    async fn balance(&self, account: &AccountId) -> Result<Option<CreditBalance>, StoreError> {
        let key = keys::credits(account);
        let mut command = redis::cmd("HMGET");
        command.arg(&key).arg(&keys::CREDITS_FIELDS[..]);
        let reply = server_error(self.pipeliner.send(command).await?).map_err(sort_error)?;
        let values: Vec<Option<String>> = redis::from_redis_value(reply)
            .map_err(|e| StoreError::Protocol(format!("HMGET reply: {e}")))?;
        let fields: Vec<Option<&str>> = values.iter().map(Option::as_deref).collect();
        parse_balance(&key, &fields)
    }

    async fn deduct(
        &self,
        request: &DeductCredits,
        now: Timestamp,
    ) -> Result<Recorded<DeductOutcome>, CreditError> {
        let idempotency = request.idempotency.as_ref();
        let amount = request.amount.to_string();
        let reply = self
            .run(&self.deduct, &request.account, idempotency, now, &[&amount])
            .await?;
        let recorded = Self::outcome(&request.account, idempotency, request.amount, &reply)?;
        let (applied, balance) = recorded.outcome;
        Ok(Recorded {
            outcome: DeductOutcome { applied, balance },
            replayed: recorded.replayed,
        })
    }

    async fn grant(
        &self,
        request: &GrantCredits,
        now: Timestamp,
    ) -> Result<Recorded<CreditBalance>, CreditError> {
        let idempotency = request.idempotency.as_ref();
        let amount = request.amount.to_string();
        let trial = if request.trial { "true" } else { "false" };
        let reply = self
            .run(
                &self.grant,
                &request.account,
                idempotency,
                now,
                &[&amount, trial],
            )
            .await?;
        let recorded = Self::outcome(&request.account, idempotency, request.amount, &reply)?;
        Ok(Recorded {
            outcome: recorded.outcome.1,
            replayed: recorded.replayed,
        })
    }

    async fn reset(
        &self,
        request: &ResetCredits,
        now: Timestamp,
    ) -> Result<Recorded<CreditBalance>, CreditError> {
        let idempotency = request.idempotency.as_ref();
        let total = request.total.to_string();
        let next_reset = request
            .period
            .boundary(now, 1)
            .ok_or_else(|| {
                StoreError::Protocol(format!(
                    "no {} period ends before the year 10000",
                    request.period
                ))
            })?
            .to_string();
        let args = [total.as_str(), request.period.as_str(), next_reset.as_str()];
        let reply = self
            .run(&self.reset, &request.account, idempotency, now, &args)
            .await?;
        let recorded = Self::outcome(&request.account, idempotency, 0, &reply)?;
        Ok(Recorded {
            outcome: recorded.outcome.1,
            replayed: recorded.replayed,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}
