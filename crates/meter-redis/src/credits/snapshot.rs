//! Balance reads: an account's credit keys as stored, fetched in one atomic
//! script that only reads, then settled in Rust by the rules of
//! [`CreditAccount`] (the rules the mutation scripts follow in Lua).

use std::sync::LazyLock;

use meter_core::{
    AccountId, Allowance, CreditAccount, CreditBalance, CreditPeriod, Grant, GrantKind, Hold,
    PlannedAllowance, ResetSchedule, StoreError, Timestamp,
};
use redis::Value;

use super::{CreditsHash, parse_count, parse_time};
use crate::{
    RedisStore, keys,
    script::{Layout, LuaScript, names},
};

static SNAPSHOT: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "credits/snapshot.lua",
        &[],
        &[names::<CreditsHash>()],
        &[],
        include_str!("../lua/credits/snapshot.lua"),
    )
    .reading_only()
});

/// The snapshot script: KEYS credits, grants, holds; no ARGV.
pub fn snapshot_script() -> &'static LuaScript {
    &SNAPSHOT
}

/// The account's balance as of `now`: what fell due applied, nothing written.
///
/// One `HMGET` when the hash says the account has neither grants nor holds
/// (a hash alone is read atomically); else the snapshot script, which reads
/// the three keys in one atomic step.
pub(super) async fn balance(
    store: &RedisStore,
    account: &AccountId,
    now: Timestamp,
) -> Result<CreditBalance, StoreError> {
    let snapshot = Snapshot::new(account);
    let key = keys::credits(account);
    let mut command = redis::cmd("HMGET");
    command.arg(&key).arg(CreditsHash::NAMES);
    let hash = match store.command(command, &key).await? {
        Value::Array(values) => snapshot.hash(&values)?,
        other => return Err(StoreError::Protocol(format!("HMGET reply {other:?}"))),
    };
    let alone = match hash.meta.as_deref() {
        Some(meta) => snapshot.meta(meta)?.alone,
        // No hash, no account: grants and holds are written with it.
        None => hash.total.is_none() && hash.last_update.is_none(),
    };
    let stored = if alone {
        snapshot.account(hash, &[], &[])?
    } else {
        let call = SNAPSHOT.call(&[
            keys::credits(account),
            keys::grants(account),
            keys::holds(account),
        ]);
        snapshot.read(store.run_raw(call).await?)?
    };
    Ok(match stored {
        None => CreditBalance::default(),
        Some(mut credits) => {
            credits.settle(now, &mut Vec::new());
            credits.balance(now)
        }
    })
}

/// The numbers of the credits hash's `meta` field.
#[derive(Default)]
struct Meta {
    seq: u64,
    period: u64,
    /// Neither grants nor holds.
    alone: bool,
    planned: Option<PlannedAllowance>,
}

/// The balance as of `now` of the account whose credits hash (an `HMGET`
/// of its layout), grants and holds (`HGETALL`s) are `parts`.
pub(crate) fn settled_balance(
    account: &AccountId,
    parts: Vec<Value>,
    now: Timestamp,
) -> Result<CreditBalance, StoreError> {
    let stored = Snapshot::new(account).read(Value::Array(parts))?;
    Ok(match stored {
        None => CreditBalance::default(),
        Some(mut credits) => {
            credits.settle(now, &mut Vec::new());
            credits.balance(now)
        }
    })
}

/// Reads one account's stored credits, naming its keys in errors.
struct Snapshot<'a> {
    account: &'a AccountId,
}

impl<'a> Snapshot<'a> {
    fn new(account: &'a AccountId) -> Self {
        Self { account }
    }

    fn corrupt(&self, key: String, field: &str, value: &str) -> StoreError {
        StoreError::Corrupt {
            what: format!("credits of account {}", self.account),
            key,
            detail: format!("field {field} holds {value:?}"),
        }
    }

    fn count(&self, key: &dyn Fn() -> String, field: &str, text: &str) -> Result<i64, StoreError> {
        parse_count(text).ok_or_else(|| self.corrupt(key(), field, text))
    }

    fn time(
        &self,
        key: &dyn Fn() -> String,
        field: &str,
        text: &str,
    ) -> Result<Timestamp, StoreError> {
        parse_time(text).ok_or_else(|| self.corrupt(key(), field, text))
    }

    /// The account the reply holds; `None` for an unknown account.
    fn read(&self, reply: Value) -> Result<Option<CreditAccount>, StoreError> {
        let protocol =
            || StoreError::Protocol(format!("credits/snapshot.lua reply for {}", self.account));
        let Value::Array(parts) = reply else {
            return Err(protocol());
        };
        let [
            Value::Array(hash),
            Value::Array(grants),
            Value::Array(holds),
        ] = &parts[..]
        else {
            return Err(protocol());
        };
        let hash = self.hash(hash)?;
        self.account(hash, grants, holds)
    }

    /// The credits hash of an `HMGET` of its layout. A field stored empty is
    /// corrupt, as the scripts hold it (the layout would read it as absent).
    fn hash(&self, values: &[Value]) -> Result<CreditsHash, StoreError> {
        let protocol = || StoreError::Protocol(format!("HMGET reply for {}", self.account));
        let values = values
            .iter()
            .map(text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|()| protocol())?;
        if let Some(at) = values.iter().position(|v| v.as_deref() == Some("")) {
            let field = CreditsHash::NAMES.get(at).copied().unwrap_or("?");
            return Err(self.corrupt(keys::credits(self.account), field, ""));
        }
        CreditsHash::from_values(values).map_err(StoreError::Protocol)
    }

    /// The account the stored hash, grants and holds describe; `None` for an
    /// unknown account.
    fn account(
        &self,
        hash: CreditsHash,
        grants: &[Value],
        holds: &[Value],
    ) -> Result<Option<CreditAccount>, StoreError> {
        if hash.total.is_none() && hash.last_update.is_none() {
            return Ok(None);
        }
        let credits_key = || keys::credits(self.account);
        let count = |field, value: &Option<String>| {
            value
                .as_deref()
                .map_or(Ok(0), |text| self.count(&credits_key, field, text))
        };
        let schedule = match &hash.reset_date {
            None => None,
            Some(next) => Some(ResetSchedule {
                next_reset: self.time(&credits_key, "resetDate", next)?,
                anchor: self.time(
                    &credits_key,
                    "resetAnchor",
                    hash.reset_anchor.as_deref().unwrap_or_default(),
                )?,
                period: hash
                    .reset_period
                    .as_deref()
                    .and_then(|p| p.parse::<CreditPeriod>().ok())
                    .ok_or_else(|| {
                        self.corrupt(
                            credits_key(),
                            "resetPeriod",
                            hash.reset_period.as_deref().unwrap_or_default(),
                        )
                    })?,
            }),
        };
        let Meta {
            seq,
            period,
            planned,
            ..
        } = match &hash.meta {
            None => Meta::default(),
            Some(meta) => self.meta(meta)?,
        };
        let mut grants = self.grants(grants)?;
        grants.sort_by(|a, b| a.spend_order().cmp(&b.spend_order()));
        Ok(Some(CreditAccount {
            allowance: Allowance {
                total: count("total", &hash.total)?,
                used: count("used", &hash.used)?,
                schedule,
            },
            grants,
            holds: self.holds(holds)?,
            last_update: hash
                .last_update
                .as_deref()
                .map(|t| self.time(&credits_key, "lastUpdate", t))
                .transpose()?,
            seq,
            period,
            planned,
        }))
    }

    /// `seq|period|grants|held|holdsNext[|planAt|planTotal|planPeriod]`:
    /// the numbers the rules keep, the planned allowance, and whether the
    /// account has neither grants nor holds (the rest is derived from the
    /// grants and holds, and checked all the same).
    fn meta(&self, meta: &str) -> Result<Meta, StoreError> {
        let bad = || self.corrupt(keys::credits(self.account), "meta", meta);
        let parts: Vec<&str> = meta.split('|').collect();
        let (seq, period, grants, held, next_hold, plan) = match parts[..] {
            [seq, period, grants, held, next_hold] => (seq, period, grants, held, next_hold, None),
            [seq, period, grants, held, next_hold, at, total, plan_period] => (
                seq,
                period,
                grants,
                held,
                next_hold,
                Some((at, total, plan_period)),
            ),
            _ => return Err(bad()),
        };
        let number = |text: &str| {
            parse_count(text)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(bad)
        };
        let (grants, held) = (number(grants)?, number(held)?);
        if !next_hold.is_empty() {
            parse_time(next_hold).ok_or_else(bad)?;
        }
        let planned = match plan {
            None => None,
            Some((at, total, period)) => Some(PlannedAllowance {
                at: parse_time(at).ok_or_else(bad)?,
                total: parse_count(total).ok_or_else(bad)?,
                period: period.parse().map_err(|_| bad())?,
            }),
        };
        Ok(Meta {
            seq: number(seq)?,
            period: number(period)?,
            alone: grants == 0 && held == 0 && next_hold.is_empty(),
            planned,
        })
    }

    fn grants(&self, fields: &[Value]) -> Result<Vec<Grant>, StoreError> {
        let key = || keys::grants(self.account);
        pairs(fields, self.account)?
            .into_iter()
            .map(|(id, value)| {
                let bad = || self.corrupt(key(), &id, &value);
                let parts: Vec<&str> = value.split('|').collect();
                let [kind, amount, left, held, created, expires] = parts[..] else {
                    return Err(bad());
                };
                Ok(Grant {
                    kind: kind.parse::<GrantKind>().map_err(|_| bad())?,
                    amount: self.count(&key, &id, amount)?,
                    left: self.count(&key, &id, left)?,
                    held: self.count(&key, &id, held)?,
                    created: self.time(&key, &id, created)?,
                    expires: (!expires.is_empty())
                        .then(|| self.time(&key, &id, expires))
                        .transpose()?,
                    id,
                })
            })
            .collect()
    }

    /// The open holds, in the order they were made (`h<n>` by `n`).
    fn holds(&self, fields: &[Value]) -> Result<Vec<Hold>, StoreError> {
        let key = || keys::holds(self.account);
        let mut holds = pairs(fields, self.account)?
            .into_iter()
            .map(|(id, value)| {
                let bad = || self.corrupt(key(), &id, &value);
                let number = id.strip_prefix('h').and_then(parse_count).ok_or_else(bad)?;
                let parts: Vec<&str> = value.split('|').collect();
                let [amount, expires, allowance, period, taken] = parts[..] else {
                    return Err(bad());
                };
                let grants = taken
                    .split(',')
                    .filter(|part| !part.is_empty())
                    .map(|part| {
                        let (grant, n) = part.split_once('=').ok_or_else(bad)?;
                        Ok((grant.to_owned(), self.count(&key, &id, n)?))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                let hold = Hold {
                    amount: self.count(&key, &id, amount)?,
                    expires: self.time(&key, &id, expires)?,
                    allowance: self.count(&key, &id, allowance)?,
                    period: u64::try_from(self.count(&key, &id, period)?).map_err(|_| bad())?,
                    grants,
                    id,
                };
                Ok((number, hold))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        holds.sort_by_key(|(number, _)| *number);
        Ok(holds.into_iter().map(|(_, hold)| hold).collect())
    }
}

/// A bulk string's text; `Ok(None)` for nil, `Err` for anything else.
pub(crate) fn text(value: &Value) -> Result<Option<String>, ()> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map(Some).map_err(|_| ()),
        Value::SimpleString(text) => Ok(Some(text.clone())),
        _ => Err(()),
    }
}

/// The field-value pairs of an `HGETALL` reply.
fn pairs(fields: &[Value], account: &AccountId) -> Result<Vec<(String, String)>, StoreError> {
    let protocol = || StoreError::Protocol(format!("HGETALL reply for the credits of {account}"));
    fields
        .chunks(2)
        .map(|pair| match pair {
            [field, value] => match (text(field), text(value)) {
                (Ok(Some(field)), Ok(Some(value))) => Ok((field, value)),
                _ => Err(protocol()),
            },
            _ => Err(protocol()),
        })
        .collect()
}
