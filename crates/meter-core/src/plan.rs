//! The plan catalog: what each plan gives and costs, read from a TOML file.
//!
//! Every amount of money is an integer number of micro-units of the
//! catalog's currency (1 USD = 1,000,000), never a float.

use std::{collections::BTreeMap, fmt};

use serde::Deserialize;

use crate::{CreditPeriod, MAX_CREDITS};

/// The plan an account is on when it has none.
pub const DEFAULT_PLAN: &str = "free";

/// How often a plan is billed; credits may still reset more often.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BillingInterval {
    /// Billed every month.
    Month,
    /// Billed every year.
    Year,
}

/// A plan's allowance for one usage metric (`api_request`, `email_sent`, …).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricLimit {
    /// Units included per month; `None` means unlimited.
    pub included: Option<i64>,
    /// Price of each unit beyond `included`, in micro-units; 0 means the limit is hard.
    #[serde(default)]
    pub overage_micros: i64,
}

/// One plan of the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The plan's name, e.g. `pro`.
    pub name: String,
    /// Credits granted each credit period.
    pub credits: i64,
    /// How often credits reset.
    pub credit_period: CreditPeriod,
    /// How often the plan is billed.
    pub billing_interval: BillingInterval,
    /// Price per billing interval, in micro-units.
    pub price_micros: i64,
    /// Per-metric usage allowances, by metric name.
    pub usage: BTreeMap<String, MetricLimit>,
    /// The billing provider's price ids that bill this plan (e.g. Stripe's `price_…`).
    pub billing_price_ids: Vec<String>,
    /// The billing provider's product ids that bill this plan (e.g. Stripe's `prod_…`).
    pub billing_product_ids: Vec<String>,
}

/// Every plan, by name (always holding [`DEFAULT_PLAN`]), and the credit
/// price of each feature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanCatalog {
    plans: BTreeMap<String, Plan>,
    /// A copy of `plans[DEFAULT_PLAN]`, so that looking it up cannot fail.
    default_plan: Plan,
    /// Credits per unit of each feature, e.g. `chat:gpt-4o` = 3.
    prices: BTreeMap<String, i64>,
    /// The currency of every amount of money, lowercase ISO 4217 (`usd`).
    currency: String,
    /// The usage metrics declared, by name, with their kind.
    metrics: BTreeMap<String, MetricKind>,
}

/// Why a catalog file was refused: the file, and toml's line, column and problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogError {
    /// The file (or other source) the catalog came from.
    pub origin: String,
    /// What is wrong, with the line and column where toml knows them.
    pub message: String,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plan catalog {}: {}",
            self.origin,
            self.message.trim_end()
        )
    }
}

impl std::error::Error for CatalogError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default = "default_currency")]
    currency: Currency,
    plans: BTreeMap<String, PlanFields>,
    #[serde(default)]
    prices: BTreeMap<FeatureName, Price>,
    #[serde(default)]
    metrics: BTreeMap<MetricName, MetricFields>,
}

/// How a usage metric adds up over a period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    /// A counter: the period's usage is the sum of what was reported.
    #[default]
    Sum,
    /// A gauge (e.g. storage used): the period's usage is the peak reported.
    Max,
}

impl MetricKind {
    /// The stored name: `sum` or `max`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sum => "sum",
            Self::Max => "max",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricFields {
    #[serde(default)]
    kind: MetricKind,
}

/// A metric name of the catalog, checked where toml can say its line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
struct MetricName(String);

impl TryFrom<String> for MetricName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        check_metric(&name)?;
        Ok(Self(name))
    }
}

/// Longest metric name, in characters.
pub const MAX_METRIC_CHARS: usize = 64;

/// Checks a usage metric name: 1–64 characters of `a-z0-9_.-`; `Err` says why not.
pub fn check_metric(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_METRIC_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "metric name {name:?} must be 1-{MAX_METRIC_CHARS} characters of a-z0-9_.-"
        ))
    }
}

fn default_currency() -> Currency {
    Currency("usd".to_owned())
}

/// A currency code: three lowercase letters (ISO 4217, as Stripe writes them).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct Currency(String);

impl TryFrom<String> for Currency {
    type Error = String;

    fn try_from(code: String) -> Result<Self, String> {
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_lowercase()) {
            Ok(Self(code))
        } else {
            Err(format!(
                "currency {code:?} must be three lowercase letters (ISO 4217), e.g. \"usd\""
            ))
        }
    }
}

/// Longest billing-provider id, in characters.
const MAX_BILLING_ID_CHARS: usize = 255;

/// Checks a billing-provider id: 1–255 characters of `A-Za-z0-9_-`.
fn check_billing_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_BILLING_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "billing id {id:?} must be 1-{MAX_BILLING_ID_CHARS} characters of A-Za-z0-9_-"
        ))
    }
}

/// A feature name of the price list, checked where toml can say its line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
struct FeatureName(String);

impl TryFrom<String> for FeatureName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        check_feature(&name)?;
        Ok(Self(name))
    }
}

/// A feature's price in credits per unit, 1..=MAX_CREDITS.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(try_from = "i64")]
struct Price(i64);

impl TryFrom<i64> for Price {
    type Error = String;

    fn try_from(credits: i64) -> Result<Self, String> {
        if (1..=MAX_CREDITS).contains(&credits) {
            Ok(Self(credits))
        } else {
            Err(format!(
                "a price of {credits} credits is outside 1..={MAX_CREDITS}"
            ))
        }
    }
}

/// Longest feature name, in characters.
pub const MAX_FEATURE_CHARS: usize = 64;

/// Checks a feature name: 1–64 characters of `a-z0-9_.:-`; `Err` says why not.
pub fn check_feature(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_FEATURE_CHARS
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | ':' | '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "feature name {name:?} must be 1-{MAX_FEATURE_CHARS} characters of a-z0-9_.:-"
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawPlanFields")]
struct PlanFields {
    credits: i64,
    credit_period: CreditPeriod,
    billing_interval: BillingInterval,
    price_micros: i64,
    usage: BTreeMap<String, MetricLimit>,
    billing_price_ids: Vec<String>,
    billing_product_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlanFields {
    credits: i64,
    #[serde(default = "default_credit_period")]
    credit_period: String,
    billing_interval: BillingInterval,
    price_micros: i64,
    #[serde(default)]
    usage: BTreeMap<String, MetricLimit>,
    #[serde(default)]
    billing_price_ids: Vec<String>,
    #[serde(default)]
    billing_product_ids: Vec<String>,
}

fn default_credit_period() -> String {
    CreditPeriod::Month.as_str().to_owned()
}

impl TryFrom<RawPlanFields> for PlanFields {
    type Error = String;

    // Checked while toml still knows where the table is, so the error carries its line.
    fn try_from(raw: RawPlanFields) -> Result<Self, String> {
        if !(0..=MAX_CREDITS).contains(&raw.credits) {
            return Err(format!(
                "credits = {} is outside 0..={MAX_CREDITS}",
                raw.credits
            ));
        }
        if !(0..=MAX_CREDITS).contains(&raw.price_micros) {
            return Err(format!(
                "price_micros = {} is outside 0..={MAX_CREDITS}",
                raw.price_micros
            ));
        }
        for (metric, limit) in &raw.usage {
            check_metric(metric)?;
            if limit.included.is_some_and(|n| n < 0) || limit.overage_micros < 0 {
                return Err(format!(
                    "usage.{metric}: included and overage_micros must not be negative"
                ));
            }
        }
        for id in raw.billing_price_ids.iter().chain(&raw.billing_product_ids) {
            check_billing_id(id)?;
        }
        Ok(Self {
            credits: raw.credits,
            credit_period: raw.credit_period.parse()?,
            billing_interval: raw.billing_interval,
            price_micros: raw.price_micros,
            usage: raw.usage,
            billing_price_ids: raw.billing_price_ids,
            billing_product_ids: raw.billing_product_ids,
        })
    }
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} name {name:?} must be 1-64 characters of a-z0-9_-"
        ))
    }
}

impl PlanCatalog {
    /// Parses a catalog; `origin` (usually the file path) is named in errors.
    pub fn from_toml(origin: &str, text: &str) -> Result<Self, CatalogError> {
        let error = |message: String| CatalogError {
            origin: origin.to_owned(),
            message,
        };
        let file: CatalogFile = toml::from_str(text).map_err(|e| error(e.to_string()))?;
        let mut plans = BTreeMap::new();
        // Each billing id bills one plan: the billing bridge maps ids to plans.
        let mut billed: BTreeMap<String, String> = BTreeMap::new();
        for (name, fields) in file.plans {
            check_name("plan", &name).map_err(error)?;
            for id in fields
                .billing_price_ids
                .iter()
                .chain(&fields.billing_product_ids)
            {
                if let Some(other) = billed.insert(id.clone(), name.clone()) {
                    return Err(error(format!(
                        "billing id {id:?} is listed by plans {other} and {name}; each id bills one plan"
                    )));
                }
            }
            let plan = Plan {
                name: name.clone(),
                credits: fields.credits,
                credit_period: fields.credit_period,
                billing_interval: fields.billing_interval,
                price_micros: fields.price_micros,
                usage: fields.usage,
                billing_price_ids: fields.billing_price_ids,
                billing_product_ids: fields.billing_product_ids,
            };
            plans.insert(name, plan);
        }
        let Some(default_plan) = plans.get(DEFAULT_PLAN).cloned() else {
            return Err(error(format!(
                "has no [plans.{DEFAULT_PLAN}]; it is required, as the plan of accounts that have none"
            )));
        };
        let prices = file
            .prices
            .into_iter()
            .map(|(FeatureName(name), Price(credits))| (name, credits))
            .collect();
        let metrics = file
            .metrics
            .into_iter()
            .map(|(MetricName(name), fields)| (name, fields.kind))
            .collect();
        Ok(Self {
            plans,
            default_plan,
            prices,
            currency: file.currency.0,
            metrics,
        })
    }

    /// The plan called `name`, if the catalog has it.
    pub fn get(&self, name: &str) -> Option<&Plan> {
        self.plans.get(name)
    }

    /// The plan of accounts that have none.
    pub fn default_plan(&self) -> &Plan {
        &self.default_plan
    }

    /// Every plan, by name.
    pub fn plans(&self) -> impl Iterator<Item = &Plan> {
        self.plans.values()
    }

    /// The price of one unit of `feature`, in credits, if the list has it.
    pub fn price(&self, feature: &str) -> Option<i64> {
        self.prices.get(feature).copied()
    }

    /// The price list: credits per unit, by feature.
    pub fn prices(&self) -> &BTreeMap<String, i64> {
        &self.prices
    }

    /// The currency of every amount of money, lowercase ISO 4217 (`usd`).
    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// The usage metrics the catalog declares (`[metrics.NAME]`), with their kind.
    pub fn metrics(&self) -> &BTreeMap<String, MetricKind> {
        &self.metrics
    }

    /// How `metric` adds up: as declared, else a counter.
    pub fn metric_kind(&self, metric: &str) -> MetricKind {
        self.metrics.get(metric).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../deploy/plans.toml");

    #[test]
    fn the_shipped_example_catalog_holds_the_tiers_found_in_practice() {
        let catalog = PlanCatalog::from_toml("deploy/plans.toml", EXAMPLE).expect("example parses");
        let credits = |name: &str| catalog.get(name).map(|p| p.credits);
        assert_eq!(credits("free"), Some(100));
        assert_eq!(credits("pro"), Some(1_000));
        assert_eq!(credits("enterprise"), Some(10_000));
        assert!(catalog.get("standard").is_some());
        assert_eq!(catalog.default_plan().name, "free");
        let yearly = catalog
            .plans()
            .find(|p| p.billing_interval == BillingInterval::Year)
            .expect("a yearly plan");
        assert_eq!(
            yearly.credit_period,
            CreditPeriod::Month,
            "yearly plans reset credits monthly"
        );
        let pro = catalog.get("pro").expect("pro");
        assert!(
            pro.usage
                .get("api_request")
                .is_some_and(|l| l.overage_micros > 0)
        );
        assert_eq!(catalog.currency(), "usd");
        assert_eq!(
            (
                pro.billing_price_ids.as_slice(),
                pro.billing_product_ids.as_slice()
            ),
            (
                ["price_1MoS37LgUG5tbmjcCA3GTNX8".to_owned()].as_slice(),
                ["prod_NZbFOV0OmNHxwl".to_owned()].as_slice()
            ),
            "the ids of Stripe's example subscription bill pro"
        );
    }

    #[test]
    fn billing_ids_and_the_currency_are_checked_and_an_id_bills_one_plan() {
        let plan = |name: &str, ids: &str| {
            format!(
                "[plans.{name}]\ncredits = 1\nbilling_interval = \"month\"\nprice_micros = 0\nbilling_price_ids = [{ids}]\n"
            )
        };
        let twice = format!(
            "{}{}",
            plan("free", "\"price_1\""),
            plan("pro", "\"price_1\"")
        );
        let err = PlanCatalog::from_toml("p", &twice)
            .expect_err("shared id")
            .to_string();
        assert!(
            err.contains("price_1") && err.contains("free") && err.contains("pro"),
            "{err}"
        );
        let bad = plan("free", "\"price 1\"");
        let err = PlanCatalog::from_toml("p", &bad)
            .expect_err("bad id")
            .to_string();
        assert!(err.contains("line") && err.contains("price 1"), "{err}");
        let euro = format!("currency = \"EUR\"\n{}", plan("free", ""));
        let err = PlanCatalog::from_toml("p", &euro)
            .expect_err("bad currency")
            .to_string();
        assert!(err.contains("currency") && err.contains("line 1"), "{err}");
        let eur = format!("currency = \"eur\"\n{}", plan("free", ""));
        assert_eq!(
            PlanCatalog::from_toml("p", &eur).map(|c| c.currency().to_owned()),
            Ok("eur".to_owned())
        );
    }

    #[test]
    fn a_malformed_catalog_names_the_file_line_and_problem() {
        let text = "[plans.free]\ncredits = 100\nbilling_interval = \"month\"\nprice_micros = 0\n\n[plans.pro]\ncredits = -5\nbilling_interval = \"month\"\nprice_micros = 1\n";
        let err = PlanCatalog::from_toml("plans.toml", text).expect_err("negative credits");
        let shown = err.to_string();
        assert!(shown.starts_with("plan catalog plans.toml: "), "{shown}");
        assert!(shown.contains("line 6"), "{shown}");
        assert!(shown.contains("credits = -5"), "{shown}");
    }

    #[test]
    fn unknown_fields_bad_periods_and_a_missing_free_plan_are_refused() {
        let base = "billing_interval = \"month\"\nprice_micros = 0\n";
        let typo = format!("[plans.free]\ncredit = 100\n{base}");
        assert!(
            PlanCatalog::from_toml("f", &typo)
                .expect_err("typo")
                .message
                .contains("credit")
        );
        let period = format!("[plans.free]\ncredits = 1\ncredit_period = \"fortnight\"\n{base}");
        assert!(
            PlanCatalog::from_toml("f", &period)
                .expect_err("period")
                .message
                .contains("fortnight")
        );
        let no_free = format!("[plans.pro]\ncredits = 1\n{base}");
        assert!(
            PlanCatalog::from_toml("f", &no_free)
                .expect_err("no free")
                .message
                .contains("plans.free")
        );
        let float = "[plans.free]\ncredits = 1\nbilling_interval = \"month\"\nprice_micros = 0.5\n";
        assert!(
            PlanCatalog::from_toml("f", float).is_err(),
            "money is never a float"
        );
    }

    #[test]
    fn the_price_list_is_credits_per_unit_by_feature_checked_with_its_line() {
        let catalog = PlanCatalog::from_toml("deploy/plans.toml", EXAMPLE).expect("example parses");
        assert_eq!(catalog.price("chat:gpt-4o"), Some(3));
        assert_eq!(catalog.price("chat:gpt-4o-mini"), Some(1));
        assert_eq!(catalog.price("nope"), None);
        let free = "[plans.free]\ncredits = 1\nbilling_interval = \"month\"\nprice_micros = 0\n";
        let zero = format!("{free}\n[prices]\n\"report\" = 0\n");
        let error = PlanCatalog::from_toml("p.toml", &zero).expect_err("a free feature");
        assert!(
            error.message.contains("line 7") && error.message.contains("outside"),
            "{error}"
        );
        let name = format!("{free}\n[prices]\n\"Chat GPT\" = 2\n");
        let error = PlanCatalog::from_toml("p.toml", &name).expect_err("a bad name");
        assert!(error.message.contains("a-z0-9_.:-"), "{error}");
        let none = PlanCatalog::from_toml("p.toml", free).expect("prices are optional");
        assert!(none.prices().is_empty());
    }
}
