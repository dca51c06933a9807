//! [`UsageStore`] on Redis: per account, a hash per month and per day
//! (metric -> value) expiring by itself, the event ids counted in a sorted
//! set, every period hash listed in the account's index for DeleteAccount,
//! the events with metadata in a stream; per metric and period, a sorted
//! set of the top consumers, raised in the same script on one Redis node
//! and right after it on Redis Cluster.

use std::{collections::BTreeMap, sync::LazyLock, time::Duration};

use meter_core::{
    AccountId, CheckQuota, Consumer, EventLogPage, EventOutcome, LoggedEvent, QuotaOutcome,
    RecordUsage, StoreError, Timestamp, UsageEvent, UsagePeriod, UsageRetention, UsageStore,
    plan_limit,
};
use redis::Value;

use crate::{
    RedisStore,
    accounts::{ProfileHash, SubscriptionHash},
    credits::{parse_count, text},
    keys,
    script::{Library, LuaScript, ScriptCall, lib, names},
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

static TOP: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "usage/top.lua",
        &[],
        &[],
        &[],
        include_str!("lua/usage/top.lua"),
    )
});

static LOG: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "usage/log.lua",
        &[lib::STORED, lib::STREAM],
        &[],
        &[],
        include_str!("lua/usage/log.lua"),
    )
    .reading_only()
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

/// The record script (`usage/record.lua` says its keys and arguments).
pub fn record_script() -> &'static LuaScript {
    &RECORD
}

/// The record script's command (`EVALSHA` and its words) for the events
/// of `account` recorded at `now`, as [`RedisUsage`] sends it on one Redis
/// node: for measuring the script alone (`make bench`).
pub fn record_command(
    account: &AccountId,
    events: &[(UsageEvent, meter_core::MetricKind)],
    now: Timestamp,
) -> Vec<String> {
    let batch = Batch::plan(account, events, UsageRetention::default(), now, true);
    script_call(&RECORD, &batch.keys, false)
        .arg(&batch.args[..])
        .words()
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

/// The rankings a batch touches: (metric, period) -> number in the
/// script's list (1-based), and their keys with their position in KEYS.
#[derive(Default)]
struct Rankings {
    numbers: BTreeMap<UsagePeriod, BTreeMap<String, usize>>,
    keys: Vec<(String, usize)>,
}

impl Rankings {
    /// The number of the ranking of `metric` in `period`, its key added to
    /// `keys` when `in_keys` (one Redis node).
    fn number(
        &mut self,
        metric: &str,
        period: UsagePeriod,
        keys: &mut Vec<String>,
        in_keys: bool,
    ) -> usize {
        // Looked up by `&str`: no allocation per event of a batch.
        if let Some(number) = self.numbers.get(&period).and_then(|m| m.get(metric)) {
            return *number;
        }
        let key = keys::usage_ranking(metric, period);
        let at = if in_keys {
            keys.push(key.clone());
            keys.len()
        } else {
            0
        };
        self.keys.push((key, at));
        self.numbers
            .entry(period)
            .or_default()
            .insert(metric.to_owned(), self.keys.len());
        self.keys.len()
    }
}

/// The common keys and header arguments of the usage scripts (`usage/usage.lua`).
fn usage_keys(account: &AccountId) -> Vec<String> {
    vec![
        keys::usage_seen(account),
        keys::idempotency_index(account),
        keys::usage_log(account),
    ]
}

fn usage_header(
    account: &AccountId,
    retention: UsageRetention,
    now: Timestamp,
    rankings: &Rankings,
) -> Vec<String> {
    let mut args = vec![
        now.as_millis().to_string(),
        millis(retention.dedupe_window).max(1).to_string(),
        now.to_string(),
        account.to_string(),
        retention.log_entries.max(1).to_string(),
        millis(retention.log_age).max(1).to_string(),
        rankings.keys.len().to_string(),
    ];
    args.extend(rankings.keys.iter().map(|(_, at)| at.to_string()));
    args
}

/// A record script call planned: its keys and arguments, and the rankings.
struct Batch {
    keys: Vec<String>,
    args: Vec<String>,
    rankings: Rankings,
}

impl Batch {
    fn plan(
        account: &AccountId,
        events: &[(UsageEvent, meter_core::MetricKind)],
        retention: UsageRetention,
        now: Timestamp,
        one_node: bool,
    ) -> Self {
        let mut keys = usage_keys(account);
        let mut position = BTreeMap::new();
        let mut slot = |period: UsagePeriod, keys: &mut Vec<String>| {
            *position.entry(period).or_insert_with(|| {
                keys.push(keys::usage_period(account, period));
                keys.len()
            })
        };
        let mut rankings = Rankings::default();
        let mut per_event = Vec::with_capacity(events.len() * 12);
        for (event, kind) in events {
            let (month, day) = (
                UsagePeriod::month_of(event.time),
                UsagePeriod::day_of(event.time),
            );
            let (month_at, day_at) = (slot(month, &mut keys), slot(day, &mut keys));
            let month_top = rankings.number(&event.metric, month, &mut keys, one_node);
            let day_top = rankings.number(&event.metric, day, &mut keys, one_node);
            let metadata = if event.metadata.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&event.metadata).unwrap_or_default()
            };
            per_event.extend([
                event.event_id.clone(),
                event.metric.clone(),
                event.value.to_string(),
                kind.as_str().to_owned(),
                month_at.to_string(),
                expiry(month, retention.month).to_string(),
                day_at.to_string(),
                expiry(day, retention.day).to_string(),
                month_top.to_string(),
                day_top.to_string(),
                metadata,
                event.time.as_millis().to_string(),
            ]);
        }
        let mut args = usage_header(account, retention, now, &rankings);
        args.extend(per_event);
        Self {
            keys,
            args,
            rankings,
        }
    }
}

/// A script call on `keys`: routed by the account's slot on a cluster,
/// with keys of other slots (rankings) on one node.
fn script_call(script: &'static LuaScript, keys: &[String], cluster: bool) -> ScriptCall {
    if cluster {
        script.call(keys)
    } else {
        script.call_on_one_node(keys)
    }
}

impl RedisUsage {
    /// On Redis Cluster, raises the account in the rankings its recorded
    /// events changed (`totals`: ranking key -> new total), each in its own
    /// slot, after the record script. A failure leaves a ranking behind
    /// until the account's next event there; the usage itself is recorded.
    async fn raise_rankings(
        &self,
        account: &AccountId,
        totals: BTreeMap<String, (i64, i64)>,
        now: Timestamp,
    ) {
        let store = self.store.clone();
        let account = account.clone();
        // Its own task: a caller that leaves (deadline, dropped stream)
        // does not cancel the raises.
        let raising = tokio::spawn(async move {
            let raises = totals.into_iter().map(|(key, (total, expires))| {
                let ttl = expires.saturating_sub(now.as_millis());
                let call = TOP
                    .call(std::slice::from_ref(&key))
                    .arg(total)
                    .arg(account.as_str())
                    .arg(ttl);
                let (store, account) = (&store, &account);
                async move {
                    if ttl < 1 {
                        return;
                    }
                    if let Err(error) = store.run_raw(call).await {
                        tracing::warn!(%account, ranking = %key, %error, "top consumers not raised; the account's next event there (or its retry) raises it");
                    }
                }
            });
            futures_util::future::join_all(raises).await;
        });
        // Answer once they are done (TopConsumers then shows them).
        let _ = raising.await;
    }
}

/// The total of each ranking of the `events` whose month and day totals
/// the script answered (recorded or duplicate: a duplicate's raise repairs
/// one a failure left behind), with the ranking's expiry (ms).
fn raised(
    events: &[(UsageEvent, meter_core::MetricKind)],
    totals_after: &[Option<(i64, i64)>],
    retention: UsageRetention,
) -> BTreeMap<String, (i64, i64)> {
    let mut totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for ((event, _), after) in events.iter().zip(totals_after) {
        let Some((month_total, day_total)) = after else {
            continue;
        };
        let month = UsagePeriod::month_of(event.time);
        let day = UsagePeriod::day_of(event.time);
        for (period, total, kept) in [
            (month, *month_total, retention.month),
            (day, *day_total, retention.day),
        ] {
            if total > 0 {
                let entry = totals
                    .entry(keys::usage_ranking(&event.metric, period))
                    .or_insert((0, expiry(period, kept)));
                entry.0 = entry.0.max(total);
            }
        }
    }
    totals
}

/// The quota script's call for `request` at `now`.
fn quota_call(request: &CheckQuota, now: Timestamp, cluster: bool) -> ScriptCall {
    let account = &request.account;
    let (month, day) = (UsagePeriod::month_of(now), UsagePeriod::day_of(now));
    let mut keys = usage_keys(account);
    keys.extend([
        keys::usage_period(account, month),
        keys::profile(account),
        keys::subscription(account),
        keys::usage_period(account, day),
    ]);
    let mut rankings = Rankings::default();
    if request.consume.is_some() {
        // Rankings 1 and 2: the month's and the day's.
        rankings.number(&request.metric, month, &mut keys, !cluster);
        rankings.number(&request.metric, day, &mut keys, !cluster);
    }
    let retention = request
        .consume
        .as_ref()
        .map_or_else(UsageRetention::default, |c| c.retention);
    let call = script_call(&QUOTA, &keys, cluster)
        .arg(usage_header(account, retention, now, &rankings))
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
            .arg(expiry(month, consume.retention.month))
            .arg(expiry(day, consume.retention.day)),
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
    call
}

/// The quota script's command (`EVALSHA` and its words) for `request` at
/// `now` on one Redis node: for measuring the script alone (`make bench`).
pub fn quota_command(request: &CheckQuota, now: Timestamp) -> Vec<String> {
    quota_call(request, now, false).words()
}

/// An event outcome as a script answers it, with the totals of the
/// event's month and day as they stand after it (recorded or duplicate).
fn outcome(text: &str) -> Result<(EventOutcome, Option<(i64, i64)>), StoreError> {
    if text == "overflow" {
        return Ok((
            EventOutcome::Rejected(meter_core::usage::TOTAL_OVERFLOW.to_owned()),
            None,
        ));
    }
    let bad = || StoreError::Protocol(format!("usage outcome {text:?}"));
    let parts: Vec<&str> = text.split('|').collect();
    let [status, month, day] = parts[..] else {
        return Err(bad());
    };
    let (Some(month_total), Some(day_total)) = (parse_count(month), parse_count(day)) else {
        return Err(bad());
    };
    let outcome = match status {
        "ok" => EventOutcome::Recorded {
            month_total,
            day_total,
        },
        "dup" => EventOutcome::Duplicate,
        _ => return Err(bad()),
    };
    Ok((outcome, Some((month_total, day_total))))
}

impl UsageStore for RedisUsage {
    async fn record(
        &self,
        request: &RecordUsage,
        now: Timestamp,
    ) -> Result<Vec<EventOutcome>, StoreError> {
        let account = &request.account;
        let cluster = self.store.is_cluster();
        let batch = Batch::plan(account, &request.events, request.retention, now, !cluster);
        let call = script_call(&RECORD, &batch.keys, cluster).arg(&batch.args[..]);
        let reply = self.store.run_raw(call).await?;
        let (outcomes, totals): (Vec<EventOutcome>, Vec<Option<(i64, i64)>>) =
            texts(reply, "usage/record.lua")?
                .iter()
                .map(|t| outcome(t))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .unzip();
        if cluster && !batch.rankings.keys.is_empty() {
            let totals = raised(&request.events, &totals, request.retention);
            self.raise_rankings(account, totals, now).await;
        }
        Ok(outcomes)
    }

    async fn check_quota(
        &self,
        request: &CheckQuota,
        now: Timestamp,
    ) -> Result<QuotaOutcome, StoreError> {
        let account = &request.account;
        let cluster = self.store.is_cluster();
        let call = quota_call(request, now, cluster);
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
        let (consumed, after) = if event.is_empty() {
            (None, None)
        } else {
            let (consumed, after) = outcome(event)?;
            (Some(consumed), after)
        };
        if let (true, Some(consume), Some(after)) = (cluster, &request.consume, after) {
            let totals = raised(&consume.events, &[Some(after)], consume.retention);
            self.raise_rankings(account, totals, now).await;
        }
        Ok(QuotaOutcome {
            plan: plan.clone(),
            decision,
            consumed,
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

    async fn top_consumers(
        &self,
        metric: &str,
        period: UsagePeriod,
        limit: usize,
        _now: Timestamp,
    ) -> Result<Vec<Consumer>, StoreError> {
        let key = keys::usage_ranking(metric, period);
        let mut command = redis::cmd("ZREVRANGE");
        command
            .arg(&key)
            .arg(0)
            .arg(limit.saturating_sub(1))
            .arg("WITHSCORES");
        let values = texts(self.store.command(command, &key).await?, "ZREVRANGE")?;
        values
            .chunks(2)
            .map(|pair| {
                let corrupt = |detail: String| StoreError::Corrupt {
                    what: format!("top consumers of {metric} in {period}"),
                    key: key.clone(),
                    detail,
                };
                match pair {
                    [account, used] => Ok(Consumer {
                        account: AccountId::parse("account", account)
                            .map_err(|_| corrupt(format!("member {account:?}")))?,
                        used: parse_count(used)
                            .ok_or_else(|| corrupt(format!("score {used:?} of {account}")))?,
                    }),
                    _ => Err(StoreError::Protocol("ZREVRANGE reply".into())),
                }
            })
            .collect()
    }

    async fn events(
        &self,
        account: &AccountId,
        page: &EventLogPage,
        now: Timestamp,
    ) -> Result<(Vec<LoggedEvent>, Option<String>), StoreError> {
        let key = keys::usage_log(account);
        let oldest = now
            .as_millis()
            .saturating_sub(millis(page.retention.log_age));
        let call = LOG
            .call(std::slice::from_ref(&key))
            .arg(page.retention.log_entries.max(1))
            .arg(oldest)
            .arg(page.before.as_deref().unwrap_or(""))
            .arg(page.size + 1)
            .arg(page.metric.as_deref().unwrap_or(""));
        let values = texts(self.store.run_raw(call).await?, "usage/log.lua")?;
        let corrupt = |detail: String| StoreError::Corrupt {
            what: format!("usage event log of account {account}"),
            key: key.clone(),
            detail,
        };
        let mut events = values
            .chunks(3)
            .map(|entry| {
                let [cursor, event, metadata] = entry else {
                    return Err(StoreError::Protocol("usage/log.lua reply".into()));
                };
                let parts: Vec<&str> = event.split('|').collect();
                let (Some(recorded_ms), [event_id, metric, value, time_ms]) = (
                    cursor
                        .split_once('-')
                        .and_then(|(ms, _)| ms.parse::<i64>().ok()),
                    &parts[..],
                ) else {
                    return Err(corrupt(format!("entry {cursor} holds {event:?}")));
                };
                let time = time_ms
                    .parse::<i64>()
                    .ok()
                    .and_then(Timestamp::from_millis)
                    .ok_or_else(|| corrupt(format!("entry {cursor} time {time_ms:?}")))?;
                Ok(LoggedEvent {
                    event: UsageEvent {
                        account: account.clone(),
                        metric: (*metric).to_owned(),
                        value: parse_count(value)
                            .ok_or_else(|| corrupt(format!("entry {cursor} value {value:?}")))?,
                        event_id: (*event_id).to_owned(),
                        time,
                        metadata: serde_json::from_str(metadata)
                            .map_err(|e| corrupt(format!("entry {cursor} metadata: {e}")))?,
                    },
                    recorded_at: Timestamp::from_millis(recorded_ms)
                        .ok_or_else(|| corrupt(format!("entry id {cursor}")))?,
                    cursor: cursor.clone(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next = if events.len() > page.size {
            events.truncate(page.size);
            events.last().map(|e| e.cursor.clone())
        } else {
            None
        };
        Ok((events, next))
    }
}
