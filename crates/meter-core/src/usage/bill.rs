//! What a month costs on a plan, and what a quota allows: integer
//! micro-units throughout.

use std::collections::BTreeMap;

use crate::{MAX_CREDITS, MetricKind, Plan};

/// One metric's line of a bill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillLine {
    /// The metric.
    pub metric: String,
    /// Units used in the period (a gauge's peak).
    pub used: i64,
    /// Units the plan includes; `None` for unlimited.
    pub included: Option<i64>,
    /// Units beyond `included`.
    pub overage_units: i64,
    /// Price of each unit beyond `included`, micro-units.
    pub unit_price_micros: i64,
    /// `overage_units × unit_price_micros`.
    pub amount_micros: i64,
}

/// A period's bill on a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bill {
    /// The plan billed.
    pub plan: String,
    /// The plan's price for the period, micro-units.
    pub base_price_micros: i64,
    /// One line per metric the plan prices or the account used, by metric.
    pub lines: Vec<BillLine>,
    /// The base price and every line's amount.
    pub total_micros: i64,
    /// The currency, lowercase ISO 4217.
    pub currency: String,
    /// Whether the period may still change: not ended, or within the
    /// grace that still takes its late events.
    pub provisional: bool,
}

/// Why a bill cannot be computed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the bill of {metric} passes {max} micro-units; it cannot be represented exactly")]
pub struct BillOverflow {
    /// The metric whose amount overflowed (`total` for the sum).
    pub metric: String,
    /// The largest amount a bill holds.
    pub max: i64,
}

/// The bill of `usage` (per metric, for one period) on `plan`: the base
/// price, and per metric the units beyond what the plan includes at its
/// overage price. Metrics the plan does not list are unlimited and free.
/// Amounts past 2^53 − 1 micro-units are refused, never rounded.
pub fn compute_bill(
    plan: &Plan,
    usage: &BTreeMap<String, i64>,
    currency: &str,
) -> Result<Bill, BillOverflow> {
    let overflow = |metric: &str| BillOverflow {
        metric: metric.to_owned(),
        max: MAX_CREDITS,
    };
    let metrics: std::collections::BTreeSet<&String> =
        plan.usage.keys().chain(usage.keys()).collect();
    let mut lines = Vec::with_capacity(metrics.len());
    let mut total = plan.price_micros;
    for metric in metrics {
        let used = usage.get(metric).copied().unwrap_or(0);
        let limit = plan.usage.get(metric);
        let included = limit.and_then(|l| l.included);
        let unit_price_micros = limit.map_or(0, |l| l.overage_micros);
        let overage_units = included.map_or(0, |inc| (used - inc).max(0));
        let amount_micros = overage_units
            .checked_mul(unit_price_micros)
            .filter(|a| *a <= MAX_CREDITS)
            .ok_or_else(|| overflow(metric))?;
        total = total
            .checked_add(amount_micros)
            .filter(|t| *t <= MAX_CREDITS)
            .ok_or_else(|| overflow("total"))?;
        lines.push(BillLine {
            metric: metric.clone(),
            used,
            included,
            overage_units,
            unit_price_micros,
            amount_micros,
        });
    }
    Ok(Bill {
        plan: plan.name.clone(),
        base_price_micros: plan.price_micros,
        lines,
        total_micros: total,
        currency: currency.to_owned(),
        provisional: false,
    })
}

/// What a quota allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaDecision {
    /// Whether `amount` more fits.
    pub allowed: bool,
    /// The plan's limit; `None` for unlimited.
    pub limit: Option<i64>,
    /// Units used in the period before the call (after it, when consumed).
    pub used: i64,
    /// Units left under the limit; `None` for unlimited.
    pub remaining: Option<i64>,
}

/// Whether `amount` more of a metric fits under `limit` when `used` are
/// used (for a gauge, whether the level `amount` is within it). A limit
/// whose overage has a price is soft (`hard = false`): it always allows,
/// and reports what is left before overage.
pub fn quota(
    limit: Option<i64>,
    hard: bool,
    kind: MetricKind,
    used: i64,
    amount: i64,
) -> QuotaDecision {
    let wanted = match kind {
        MetricKind::Sum => used.saturating_add(amount),
        MetricKind::Max => amount,
    };
    match limit {
        None => QuotaDecision {
            allowed: true,
            limit: None,
            used,
            remaining: None,
        },
        Some(limit) => QuotaDecision {
            allowed: !hard || wanted <= limit,
            limit: Some(limit),
            used,
            remaining: Some((limit - used).max(0)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PlanCatalog;

    const CATALOG: &str = r#"
[metrics.storage_gb]
kind = "max"

[plans.free]
credits = 100
billing_interval = "month"
price_micros = 0

[plans.pro]
credits = 1000
billing_interval = "month"
price_micros = 29_000_000

[plans.pro.usage.api_request]
included = 100_000
overage_micros = 100

[plans.pro.usage.email_sent]
included = 10_000
overage_micros = 1_000

[plans.pro.usage.storage_gb]
included = 50
overage_micros = 250_000

[plans.pro.usage.sms]
overage_micros = 0
"#;

    #[test]
    fn a_bill_with_overages_on_two_metrics_equals_the_table_by_hand() {
        let catalog = PlanCatalog::from_toml("test", CATALOG).expect("catalog");
        let pro = catalog.get("pro").expect("pro");
        let usage: BTreeMap<String, i64> = [
            ("api_request", 123_456),
            ("email_sent", 9_000),
            ("storage_gb", 62),
            ("webhook", 7),
        ]
        .into_iter()
        .map(|(m, v)| (m.to_owned(), v))
        .collect();
        let bill = compute_bill(pro, &usage, "usd").expect("bill");
        /// metric, used, included, overage units, unit price, amount.
        type Row<'a> = (&'a str, i64, Option<i64>, i64, i64, i64);
        let table: Vec<Row<'_>> = bill
            .lines
            .iter()
            .map(|l| {
                (
                    l.metric.as_str(),
                    l.used,
                    l.included,
                    l.overage_units,
                    l.unit_price_micros,
                    l.amount_micros,
                )
            })
            .collect();
        assert_eq!(
            table,
            [
                // 23,456 requests over 100,000 at $0.0001: $2.3456.
                (
                    "api_request",
                    123_456,
                    Some(100_000),
                    23_456,
                    100,
                    2_345_600
                ),
                ("email_sent", 9_000, Some(10_000), 0, 1_000, 0),
                ("sms", 0, None, 0, 0, 0),
                // 12 GB over 50 at $0.25: $3.
                ("storage_gb", 62, Some(50), 12, 250_000, 3_000_000),
                ("webhook", 7, None, 0, 0, 0),
            ]
        );
        assert_eq!(bill.base_price_micros, 29_000_000);
        assert_eq!(bill.total_micros, 29_000_000 + 2_345_600 + 3_000_000);
        assert_eq!(bill.currency, "usd");
    }

    #[test]
    fn an_amount_past_two_to_the_53_is_refused_not_rounded() {
        let catalog = PlanCatalog::from_toml("test", CATALOG).expect("catalog");
        let pro = catalog.get("pro").expect("pro");
        let usage = BTreeMap::from([("storage_gb".to_owned(), MAX_CREDITS)]);
        let err = compute_bill(pro, &usage, "usd").expect_err("overflow");
        assert_eq!(err.metric, "storage_gb");
    }

    #[test]
    fn quotas_are_hard_soft_or_unlimited() {
        let sum = MetricKind::Sum;
        assert_eq!(
            quota(Some(10), true, sum, 9, 1),
            QuotaDecision {
                allowed: true,
                limit: Some(10),
                used: 9,
                remaining: Some(1)
            }
        );
        assert!(!quota(Some(10), true, sum, 9, 2).allowed);
        assert!(
            quota(Some(10), false, sum, 9, 2).allowed,
            "a priced overage is a soft limit"
        );
        assert_eq!(quota(None, true, sum, 1_000_000, 5).limit, None);
        assert_eq!(quota(Some(10), true, sum, 15, 0).remaining, Some(0));
        let max = MetricKind::Max;
        assert!(
            quota(Some(50), true, max, 40, 20).allowed,
            "a gauge's level 20 is within 50"
        );
        assert!(!quota(Some(50), true, max, 4, 51).allowed);
    }
}
