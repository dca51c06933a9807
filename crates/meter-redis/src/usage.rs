//! [`UsageStore`] on Redis: per account, a hash per month and per day
//! (metric -> value) expiring by itself, the event ids counted in a sorted
//! set, every period hash listed in the account's index for DeleteAccount.

use std::{collections::BTreeMap, sync::LazyLock, time::Duration};

use meter_core::{
    AccountId, CheckQuota, EventOutcome, QuotaOutcome, RecordUsage, StoreError, Timestamp,
    UsagePeriod, UsageStore, plan_limit,
};
use redis::Value;

use crate::{
    RedisStore,
    accounts::{ProfileHash, SubscriptionHash},
    credits::{parse_count, text},
    keys,
    script::{Library, LuaScript, lib, names},
};

/// `usage/usage.lua`: counting an event into its month and day.
const USAGE: Library = Library {
    name: "usage/usage.lua",
    source: include_str!("lua/usage/usage.lua"),
};

static RECORD: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "usage/record.lua",
        &[lib::STORED, USAGE],
        &[],
        &[],
        include_str!("lua/usage/record.lua"),
    )
});
static QUOTA: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "usage/quota.lua",
        &[lib::STORED, USAGE, crate::accounts::SUBSCRIPTION],
        &[names::<ProfileHash>(), names::<SubscriptionHash>()],
        &[
            names::<crate::accounts::AccountReply>(),
            names::<ProfileHash>(),
            names::<SubscriptionHash>(),
        ],
        include_str!("lua/usage/quota.lua"),
    )
});

static READ: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "usage/read.lua",
        &[],
        &[],
        &[],
        include_str!("lua/usage/read.lua"),
    )
    .reading_only()
});

static BILL: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "usage/bill.lua",
        &[],
        &[names::<SubscriptionHash>()],
        &[],
        include_str!("lua/usage/bill.lua"),
    )
    .reading_only()
});

/// The record script: KEYS seen ids, index, the period hashes; ARGV now_ms,
/// window_ms, now_text, then 8 per event (id, metric, value, kind, month key position,
/// month expiry, day key position, day expiry).
pub fn record_script() -> &'static LuaScript {
    &RECORD
}

/// The usage store on Redis.
#[derive(Clone, Debug)]
pub struct RedisUsage {
    store: RedisStore,
}

impl RedisUsage {
    /// Usage on `store`.
    pub fn new(store: RedisStore) -> Self {
        Self { store }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// When the hash of `period` expires: its end plus `retention`, ms.
fn expiry(period: UsagePeriod, retention: Duration) -> i64 {
    period
        .end()
        .unwrap_or(Timestamp::MAX)
        .as_millis()
        .saturating_add(millis(retention))
}

/// One script reply value as text.
fn texts(reply: Value, what: &str) -> Result<Vec<String>, StoreError> {
    let protocol = || StoreError::Protocol(format!("{what} reply"));
    let Value::Array(values) = reply else {
        return Err(protocol());
    };
    values
        .iter()
        .map(|v| text(v).ok().flatten().ok_or_else(protocol))
        .collect()
}

/// The metric -> value pairs of a period hash's `HGETALL`.
fn parse_usage(
    account: &AccountId,
    key: &str,
    values: Vec<String>,
) -> Result<BTreeMap<String, i64>, StoreError> {
    values
        .chunks(2)
        .map(|pair| match pair {
            [metric, value] => parse_count(value)
                .map(|v| (metric.clone(), v))
                .ok_or_else(|| StoreError::Corrupt {
                    what: format!("usage of account {account}"),
                    key: key.to_owned(),
                    detail: format!("field {metric} holds {value:?}"),
                }),
            _ => Err(StoreError::Protocol("HGETALL reply".into())),
        })
        .collect()
}

/// An event outcome as a script answers it.
fn outcome(text: &str) -> Result<EventOutcome, StoreError> {
    if text == "dup" {
        return Ok(EventOutcome::Duplicate);
    }
    if text == "overflow" {
        return Ok(EventOutcome::Rejected(
            meter_core::usage::TOTAL_OVERFLOW.to_owned(),
        ));
    }
    let parts: Vec<&str> = text.split('|').collect();
    match parts[..] {
        ["ok", month, day] => match (parse_count(month), parse_count(day)) {
            (Some(month_total), Some(day_total)) => Ok(EventOutcome::Recorded {
                month_total,
                day_total,
            }),
            _ => Err(StoreError::Protocol(format!("usage outcome {text:?}"))),
        },
        _ => Err(StoreError::Protocol(format!("usage outcome {text:?}"))),
    }
}

impl UsageStore for RedisUsage {
    async fn record(
        &self,
        request: &RecordUsage,
        now: Timestamp,
    ) -> Result<Vec<EventOutcome>, StoreError> {
        let account = &request.account;
        let mut keys = vec![keys::usage_seen(account), keys::idempotency_index(account)];
        let mut position = BTreeMap::new();
        let mut slot = |period: UsagePeriod, keys: &mut Vec<String>| {
            *position.entry(period).or_insert_with(|| {
                keys.push(keys::usage_period(account, period));
                keys.len()
            })
        };
        let mut args: Vec<String> = vec![
            now.as_millis().to_string(),
            millis(request.dedupe_window).max(1).to_string(),
        ];
        for (event, kind) in &request.events {
            let (month, day) = (
                UsagePeriod::month_of(event.time),
                UsagePeriod::day_of(event.time),
            );
            let (month_at, day_at) = (slot(month, &mut keys), slot(day, &mut keys));
            args.extend([
                event.event_id.clone(),
                event.metric.clone(),
                event.value.to_string(),
                kind.as_str().to_owned(),
                month_at.to_string(),
                expiry(month, request.month_retention).to_string(),
                day_at.to_string(),
                expiry(day, request.day_retention).to_string(),
            ]);
        }
        let call = RECORD
            .call(&keys)
            .arg(args[0].as_str())
            .arg(args[1].as_str())
            .arg(now.to_string())
            .arg(&args[2..]);
        let reply = self.store.run_raw(call).await?;
        texts(reply, "usage/record.lua")?
            .iter()
            .map(|t| outcome(t))
            .collect()
    }

    async fn check_quota(
        &self,
        request: &CheckQuota,
        now: Timestamp,
    ) -> Result<QuotaOutcome, StoreError> {
        let account = &request.account;
        let (month, day) = (UsagePeriod::month_of(now), UsagePeriod::day_of(now));
        let keys = [
            keys::usage_seen(account),
            keys::idempotency_index(account),
            keys::usage_period(account, month),
            keys::usage_period(account, day),
            keys::profile(account),
            keys::subscription(account),
        ];
        let window = request
            .consume
            .as_ref()
            .map_or(1, |c| millis(c.dedupe_window).max(1));
        let call = QUOTA
            .call(&keys)
            .arg(now.as_millis())
            .arg(window)
            .arg(now.to_string())
            .arg(request.metric.as_str())
            .arg(request.amount);
        let mut call = crate::accounts::default_plan_args(call, request.catalog.default_plan());
        call = match request
            .consume
            .as_ref()
            .and_then(|c| c.events.first().map(|(event, kind)| (c, event, kind)))
        {
            // Consumed units count in the month and day of now.
            Some((consume, event, kind)) => call
                .arg(event.event_id.as_str())
                .arg(event.value)
                .arg(kind.as_str())
                .arg(expiry(month, consume.month_retention))
                .arg(expiry(day, consume.day_retention)),
            None => call
                .arg(&["", ""][..])
                .arg(request.kind.as_str())
                .arg(&["", ""][..]),
        };
        for plan in request.catalog.plans() {
            let (limit, hard) = plan_limit(plan, &request.metric);
            call = call
                .arg(plan.name.as_str())
                .arg(limit.map(|l| l.to_string()).unwrap_or_default())
                .arg(if hard { "1" } else { "0" });
        }
        let reply = texts(self.store.run_raw(call).await?, "usage/quota.lua")?;
        let [allowed, used, event, plan, limit, hard] = &reply[..] else {
            return Err(StoreError::Protocol("usage/quota.lua reply".into()));
        };
        let bad = |what: &str| StoreError::Protocol(format!("usage/quota.lua {what}"));
        let used = parse_count(used).ok_or_else(|| bad("used"))?;
        let limit = if limit.is_empty() {
            None
        } else {
            Some(parse_count(limit).ok_or_else(|| bad("limit"))?)
        };
        let mut decision =
            meter_core::quota(limit, hard == "1", request.kind, used, request.amount);
        decision.allowed = allowed == "1";
        Ok(QuotaOutcome {
            plan: plan.clone(),
            decision,
            consumed: if event.is_empty() {
                None
            } else {
                Some(outcome(event)?)
            },
        })
    }

    async fn usage_and_subscription(
        &self,
        account: &AccountId,
        period: UsagePeriod,
        now: Timestamp,
    ) -> Result<(BTreeMap<String, i64>, Option<meter_core::Subscription>), StoreError> {
        let key = keys::usage_period(account, period);
        let call = BILL
            .call(&[
                key.clone(),
                keys::idempotency_index(account),
                keys::subscription(account),
            ])
            .arg(now.as_millis());
        let protocol = || StoreError::Protocol(format!("usage/bill.lua reply for {account}"));
        let Value::Array(parts) = self.store.run_raw(call).await? else {
            return Err(protocol());
        };
        let [usage, subscription] = <[Value; 2]>::try_from(parts).map_err(|_| protocol())?;
        let usage = parse_usage(account, &key, texts(usage, "usage/bill.lua")?)?;
        let Value::Array(fields) = subscription else {
            return Err(protocol());
        };
        let fields = fields
            .iter()
            .map(|v| text(v).map_err(|()| protocol()))
            .collect::<Result<Vec<_>, _>>()?;
        let subscription = crate::accounts::parse_subscription(
            account,
            <SubscriptionHash as crate::script::Layout>::from_values(fields)
                .map_err(StoreError::Protocol)?,
        )?;
        Ok((usage, subscription))
    }

    async fn usage(
        &self,
        account: &AccountId,
        period: UsagePeriod,
        now: Timestamp,
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        let key = keys::usage_period(account, period);
        let call = READ
            .call(&[key.clone(), keys::idempotency_index(account)])
            .arg(now.as_millis());
        let values = texts(self.store.run_raw(call).await?, "usage/read.lua")?;
        parse_usage(account, &key, values)
    }
}
