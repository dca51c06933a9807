//! [`CreditLedger`] on Redis: one script per mutation, one `HMGET` per read.

use std::sync::LazyLock;

use meter_core::{
    AccountId, CreditBalance, CreditLedger, CreditPeriod, DeductCredits, DeductOutcome,
    GrantCredits, Idempotency, IdempotencyWindow, MAX_CREDITS, MeterError, Recorded, ResetCredits,
    ResetSchedule, StoreError, Timestamp, credits::total_overflow,
};

use crate::{
    RedisStore, keys, layout,
    script::{Library, LuaScript, ScriptCall, lib, names},
};

layout! {
    /// The credits hash `user:{<account_id>}:credits`, field by field as
    /// `redis-cli HGETALL` shows it (docs/redis-schema.md).
    pub struct CreditsHash as "CREDITS_HASH" {
        /// Credits of the current period, before use.
        total = "total",
        /// Credits used in the current period.
        used = "used",
        /// When the current period ends.
        reset_date = "resetDate",
        /// The instant periods are counted from.
        reset_anchor = "resetAnchor",
        /// `day`, `week`, `month` or `year`.
        reset_period = "resetPeriod",
        /// When the balance last changed.
        last_update = "lastUpdate",
        /// `true` or `false`.
        trial = "isTrialCredits",
    }
}

layout! {
    /// What every credits script answers, and what an idempotency record keeps.
    pub struct CreditsReply as "CREDITS_REPLY" {
        /// `ok`, `conflict` (key reused with other arguments) or `overflow`.
        status = "status",
        /// `1` when the change was made.
        applied = "applied",
        /// The balance after the call, as in [`CreditsHash`].
        total = "total",
        /// Used credits after the call.
        used = "used",
        /// The next reset, absent without a schedule.
        reset_date = "reset_date",
        /// The schedule's anchor.
        reset_anchor = "reset_anchor",
        /// The schedule's period.
        reset_period = "reset_period",
        /// When the balance last changed.
        last_update = "last_update",
        /// `1` for trial credits.
        trial = "trial",
        /// `1` when this is the remembered reply of an earlier call.
        replayed = "replayed",
    }
}

/// `credits/balance.lua`: loading the credits hash, and the credits reply.
const BALANCE: Library = Library {
    name: "credits/balance.lua",
    source: include_str!("lua/credits/balance.lua"),
};

fn credits_script(name: &'static str, body: &str) -> LuaScript {
    LuaScript::new(
        name,
        &[lib::STORED, lib::MUTATION, lib::PERIOD, BALANCE],
        &[names::<CreditsHash>()],
        &[names::<CreditsReply>()],
        body,
    )
}

static DEDUCT: LazyLock<LuaScript> =
    LazyLock::new(|| credits_script("credits/deduct.lua", include_str!("lua/credits/deduct.lua")));
static GRANT: LazyLock<LuaScript> =
    LazyLock::new(|| credits_script("credits/grant.lua", include_str!("lua/credits/grant.lua")));
static RESET: LazyLock<LuaScript> =
    LazyLock::new(|| credits_script("credits/reset.lua", include_str!("lua/credits/reset.lua")));

/// The deduct script: KEYS credits hash[, idempotency record]; ARGV now_ms,
/// now_text, fingerprint, window_ms, amount.
pub fn deduct_script() -> &'static LuaScript {
    &DEDUCT
}

/// The grant script: as [`deduct_script`], then amount, trial (`true`|`false`).
pub fn grant_script() -> &'static LuaScript {
    &GRANT
}

/// The reset script: as [`deduct_script`], then total, period, next_reset_text.
pub fn reset_script() -> &'static LuaScript {
    &RESET
}

/// The credit ledger on Redis.
#[derive(Clone, Debug)]
pub struct RedisCreditLedger {
    store: RedisStore,
    window: IdempotencyWindow,
}

impl RedisCreditLedger {
    /// A ledger on `store` that remembers idempotency keys for `window`.
    pub fn new(store: RedisStore, window: IdempotencyWindow) -> Self {
        Self { store, window }
    }

    /// A call of `script` on the account's keys, with the arguments every
    /// mutation starts with (`lua/lib/mutation.lua`).
    fn call(
        &self,
        script: &'static LuaScript,
        account: &AccountId,
        idempotency: Option<&Idempotency>,
        now: Timestamp,
    ) -> ScriptCall {
        let call = match idempotency {
            Some(idem) => script.call(&[
                keys::credits(account),
                keys::credits_idempotency(account, &idem.key),
            ]),
            None => script.call(&[keys::credits(account)]),
        };
        call.arg(now.as_millis())
            .arg(now.to_string())
            .arg(idempotency.map_or("", |i| i.fingerprint.as_str()))
            .arg(self.window.as_millis())
    }

    /// Runs a credits script and reads its reply: a balance, an idempotency
    /// conflict, or an overflow of `amount`.
    async fn mutate(
        &self,
        call: ScriptCall,
        account: &AccountId,
        idempotency: Option<&Idempotency>,
        amount: i64,
    ) -> Result<Recorded<(bool, CreditBalance)>, MeterError> {
        let reply: CreditsReply = self
            .store
            .run(call)
            .await
            .map_err(|e| describe(e, account))?;
        match reply.status.as_deref() {
            Some("ok") => {
                let balance = parse_balance(account, BalanceFields::from(&reply))?;
                Ok(Recorded {
                    outcome: (
                        reply.applied.as_deref() == Some("1"),
                        balance.unwrap_or_default(),
                    ),
                    replayed: reply.replayed.as_deref() == Some("1"),
                })
            }
            Some("conflict") => Err(MeterError::IdempotencyConflict {
                key: idempotency
                    .map(|i| i.key.as_str().to_owned())
                    .unwrap_or_default(),
            }),
            Some("overflow") => {
                let total = reply
                    .total
                    .as_deref()
                    .and_then(parse_count)
                    .unwrap_or_default();
                Err(total_overflow(total, amount).into())
            }
            _ => Err(
                StoreError::Protocol(format!("unexpected credits script reply {reply:?}")).into(),
            ),
        }
    }
}

/// Names the account in a corrupt-data error, for the caller.
fn describe(error: StoreError, account: &AccountId) -> StoreError {
    match error {
        StoreError::Corrupt { key, detail, .. } => StoreError::Corrupt {
            what: format!("credits of account {account}"),
            key,
            detail,
        },
        other => other,
    }
}

/// A balance's stored texts, from the hash or from a script's reply.
struct BalanceFields<'a> {
    total: Option<&'a str>,
    used: Option<&'a str>,
    reset_date: Option<&'a str>,
    reset_anchor: Option<&'a str>,
    reset_period: Option<&'a str>,
    last_update: Option<&'a str>,
    /// `(text, what counts as true, what counts as false)`.
    trial: (Option<&'a str>, &'static str, &'static str),
}

impl<'a> From<&'a CreditsHash> for BalanceFields<'a> {
    fn from(hash: &'a CreditsHash) -> Self {
        Self {
            total: hash.total.as_deref(),
            used: hash.used.as_deref(),
            reset_date: hash.reset_date.as_deref(),
            reset_anchor: hash.reset_anchor.as_deref(),
            reset_period: hash.reset_period.as_deref(),
            last_update: hash.last_update.as_deref(),
            trial: (hash.trial.as_deref(), "true", "false"),
        }
    }
}

impl<'a> From<&'a CreditsReply> for BalanceFields<'a> {
    fn from(reply: &'a CreditsReply) -> Self {
        Self {
            total: reply.total.as_deref(),
            used: reply.used.as_deref(),
            reset_date: reply.reset_date.as_deref(),
            reset_anchor: reply.reset_anchor.as_deref(),
            reset_period: reply.reset_period.as_deref(),
            last_update: reply.last_update.as_deref(),
            trial: (reply.trial.as_deref(), "1", "0"),
        }
    }
}

/// A stored count: a plain decimal integer from 0 to [`MAX_CREDITS`], no
/// sign, no leading zero (the rule of `lua/lib/stored.lua`).
fn parse_count(text: &str) -> Option<i64> {
    let plain = text == "0"
        || (text.len() <= 16
            && text.starts_with(|c: char| ('1'..='9').contains(&c))
            && text.bytes().all(|b| b.is_ascii_digit()));
    text.parse::<i64>()
        .ok()
        .filter(|n| plain && *n <= MAX_CREDITS)
}

/// A stored time: exactly the form meterd writes, `2026-02-28T10:00:00.000Z`
/// (the rule of `lua/lib/stored.lua`). A text of that shape that parses as
/// a real date round-trips, so checking the shape is checking canonical form.
fn parse_time(text: &str) -> Option<Timestamp> {
    const SHAPE: &[u8; 24] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 24
        && bytes.iter().zip(SHAPE).all(|(b, s)| match s {
            b'd' => b.is_ascii_digit(),
            separator => b == separator,
        })
        // A leap second (`:60`) parses, but is not a time meterd writes.
        && bytes[17] <= b'5';
    shaped.then(|| Timestamp::parse(text)).flatten()
}

/// The balance the fields describe; `Ok(None)` when there is no `total` (an
/// unknown account). Any field that does not parse makes it corrupt.
fn parse_balance(
    account: &AccountId,
    fields: BalanceFields<'_>,
) -> Result<Option<CreditBalance>, StoreError> {
    let corrupt = |field: &str, value: Option<&str>| StoreError::Corrupt {
        what: format!("credits of account {account}"),
        key: keys::credits(account),
        detail: format!("field {field} holds {value:?}"),
    };
    let Some(total) = fields.total else {
        return Ok(None);
    };
    let count = |field: &str, value: Option<&str>| match value {
        None => Ok(0),
        Some(text) => parse_count(text).ok_or_else(|| corrupt(field, value)),
    };
    let time = |field: &str, value: Option<&str>| {
        value
            .map(|text| parse_time(text).ok_or_else(|| corrupt(field, value)))
            .transpose()
    };
    let schedule = match time("resetDate", fields.reset_date)? {
        None => None,
        Some(next_reset) => Some(ResetSchedule {
            anchor: time("resetAnchor", fields.reset_anchor)?
                .ok_or_else(|| corrupt("resetAnchor", None))?,
            period: fields
                .reset_period
                .and_then(|p| p.parse::<CreditPeriod>().ok())
                .ok_or_else(|| corrupt("resetPeriod", fields.reset_period))?,
            next_reset,
        }),
    };
    let (trial_text, yes, no) = fields.trial;
    let trial = match trial_text {
        None => false,
        Some(text) if text == yes => true,
        Some(text) if text == no => false,
        Some(_) => return Err(corrupt("isTrialCredits", trial_text)),
    };
    Ok(Some(CreditBalance {
        total: count("total", Some(total))?,
        used: count("used", fields.used)?,
        schedule,
        last_update: time("lastUpdate", fields.last_update)?,
        trial,
    }))
}

impl CreditLedger for RedisCreditLedger {
    async fn balance(&self, account: &AccountId) -> Result<Option<CreditBalance>, StoreError> {
        let hash: CreditsHash = self
            .store
            .read_hash(&keys::credits(account))
            .await
            .map_err(|e| describe(e, account))?;
        parse_balance(account, BalanceFields::from(&hash))
    }

    async fn deduct(
        &self,
        request: &DeductCredits,
        now: Timestamp,
    ) -> Result<Recorded<DeductOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let call = self
            .call(&DEDUCT, &request.account, idempotency, now)
            .arg(request.amount);
        let recorded = self
            .mutate(call, &request.account, idempotency, request.amount)
            .await?;
        Ok(recorded.map(|(applied, balance)| DeductOutcome { applied, balance }))
    }

    async fn grant(
        &self,
        request: &GrantCredits,
        now: Timestamp,
    ) -> Result<Recorded<CreditBalance>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let call = self
            .call(&GRANT, &request.account, idempotency, now)
            .arg(request.amount)
            .arg(if request.trial { "true" } else { "false" });
        let recorded = self
            .mutate(call, &request.account, idempotency, request.amount)
            .await?;
        Ok(recorded.map(|(_, balance)| balance))
    }

    async fn reset(
        &self,
        request: &ResetCredits,
        now: Timestamp,
    ) -> Result<Recorded<CreditBalance>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let next_reset = request.period.boundary(now, 1).ok_or_else(|| {
            StoreError::Protocol(format!(
                "no {} period ends before the year 10000",
                request.period
            ))
        })?;
        let call = self
            .call(&RESET, &request.account, idempotency, now)
            .arg(request.total)
            .arg(request.period.as_str())
            .arg(next_reset.to_string());
        let recorded = self.mutate(call, &request.account, idempotency, 0).await?;
        Ok(recorded.map(|(_, balance)| balance))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_counts_are_plain_integers_only() {
        for good in ["0", "1", "42", "9007199254740991"] {
            assert!(parse_count(good).is_some(), "{good}");
        }
        for bad in [
            "",
            "1.5",
            "1e3",
            "inf",
            "nan",
            "0x10",
            "+5",
            "-1",
            "007",
            " 1",
            "9007199254740992",
        ] {
            assert_eq!(parse_count(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stored_times_are_the_canonical_form_only() {
        assert!(parse_time("2026-02-28T10:00:00.000Z").is_some());
        for bad in [
            "2026-02-28T10:00:00Z",
            "2026-02-28T10:00:00.000+00:00",
            "2026-02-30T10:00:00.000Z",
            "2026-13-01T10:00:00.000Z",
            "2026-06-30T23:59:60.000Z",
            "2026-02-28t10:00:00.000Z",
            "2026-02-28T10:00:00.000z",
            "2026-02-28T10:00:00.0000",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
