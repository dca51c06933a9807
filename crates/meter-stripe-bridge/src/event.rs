//! The parts of Stripe's objects the bridge reads; everything else in a
//! payload is ignored. Shapes follow Stripe's API, old and new: since API
//! version 2025-03-31 a subscription's billing period sits on its items,
//! and an invoice names its subscription under `parent`.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer};

/// A webhook delivery: the event envelope.
#[derive(Debug, Deserialize)]
pub struct Event {
    /// `evt_…`.
    pub id: String,
    /// What happened, e.g. `customer.subscription.updated`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened, Unix seconds.
    pub created: i64,
    /// The object it is about.
    pub data: EventData,
}

/// `data` of an event.
#[derive(Debug, Deserialize)]
pub struct EventData {
    /// The object, parsed by type once the event's type is known.
    pub object: serde_json::Value,
}

/// An id, or the object it names when expanded (`{"id": …}`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Expandable {
    /// Not expanded.
    Id(String),
    /// Expanded.
    Object {
        /// The object's id.
        id: String,
    },
}

impl Expandable {
    /// The id.
    pub fn id(&self) -> &str {
        match self {
            Self::Id(id) | Self::Object { id } => id,
        }
    }
}

/// Metadata: strings by key.
pub type Metadata = HashMap<String, String>;

/// A field Stripe may send as `null`, read as its default then.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A price: its id and product.
#[derive(Clone, Debug, Deserialize)]
pub struct Price {
    /// `price_…`.
    pub id: String,
    /// `prod_…`.
    pub product: Option<Expandable>,
}

/// A subscription.
#[derive(Debug, Deserialize)]
pub struct Subscription {
    /// `sub_…`.
    pub id: String,
    /// `cus_…`.
    pub customer: Option<Expandable>,
    /// Stripe's status: `active`, `trialing`, `past_due`, ….
    pub status: String,
    /// The billing period (before API version 2025-03-31).
    pub current_period_start: Option<i64>,
    /// The billing period's end (before API version 2025-03-31).
    pub current_period_end: Option<i64>,
    /// Whether it ends at the period's end.
    #[serde(default, deserialize_with = "nullable")]
    pub cancel_at_period_end: bool,
    /// Set while the merchant paused collecting payments (the status stays
    /// `active`, its invoices are not paid).
    pub pause_collection: Option<serde_json::Value>,
    /// Metadata set by the app (`account_id`, `user_id`).
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: Metadata,
    /// Its items.
    pub items: Option<List<SubscriptionItem>>,
}

/// A list object: its `data`.
#[derive(Debug, Deserialize)]
pub struct List<T> {
    /// The entries.
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
}

/// An item of a subscription.
#[derive(Debug, Deserialize)]
pub struct SubscriptionItem {
    /// Its price.
    pub price: Option<Price>,
    /// The billing period (since API version 2025-03-31).
    pub current_period_start: Option<i64>,
    /// The billing period's end (since API version 2025-03-31).
    pub current_period_end: Option<i64>,
}

impl Subscription {
    /// The billing period, from the subscription, or else from the item
    /// billed at `price` (the plan's), or else its first item that has one
    /// (items of other intervals keep periods of their own).
    pub fn period(&self, price: &str) -> (Option<i64>, Option<i64>) {
        let items = || self.items.iter().flat_map(|items| &items.data);
        let dated = |item: &&SubscriptionItem| item.current_period_start.is_some();
        let item = items()
            .filter(dated)
            .find(|item| item.price.as_ref().is_some_and(|p| p.id == price))
            .or_else(|| items().find(dated));
        (
            self.current_period_start
                .or_else(|| item.and_then(|i| i.current_period_start)),
            self.current_period_end
                .or_else(|| item.and_then(|i| i.current_period_end)),
        )
    }

    /// The prices of its items.
    pub fn prices(&self) -> Vec<Price> {
        self.items
            .iter()
            .flat_map(|items| &items.data)
            .filter_map(|item| item.price.clone())
            .collect()
    }
}

/// An invoice.
#[derive(Debug, Deserialize)]
pub struct Invoice {
    /// `in_…`.
    pub id: String,
    /// When it was made, Unix seconds: the time of the billing state it
    /// describes (a cycle's invoice is made as the period starts).
    pub created: i64,
    /// Why it was made: `subscription_create`, `subscription_cycle`,
    /// `subscription_update`, `manual`, ….
    pub billing_reason: Option<String>,
    /// What was paid, in the currency's smallest unit.
    #[serde(default, deserialize_with = "nullable")]
    pub amount_paid: i64,
    /// `cus_…`.
    pub customer: Option<Expandable>,
    /// Its subscription (before API version 2025-03-31).
    pub subscription: Option<Expandable>,
    /// What it bills for (since API version 2025-03-31).
    pub parent: Option<InvoiceParent>,
    /// Metadata.
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: Metadata,
    /// The subscription's metadata, as Stripe copies it (older versions).
    pub subscription_details: Option<SubscriptionDetails>,
    /// Its lines.
    pub lines: Option<List<InvoiceLine>>,
}

/// `parent` of an invoice.
#[derive(Debug, Deserialize)]
pub struct InvoiceParent {
    /// Set when a subscription is billed.
    pub subscription_details: Option<SubscriptionDetails>,
}

/// The subscription an invoice bills.
#[derive(Debug, Deserialize)]
pub struct SubscriptionDetails {
    /// `sub_…` (under `parent`).
    pub subscription: Option<Expandable>,
    /// The subscription's metadata when the invoice was made.
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: Metadata,
}

/// A line of an invoice.
#[derive(Debug, Deserialize)]
pub struct InvoiceLine {
    /// `subscription` or `invoiceitem` (before API version 2025-03-31).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Whether it prorates a change (before API version 2025-03-31).
    pub proration: Option<bool>,
    /// What it bills for (since API version 2025-03-31).
    pub parent: Option<LineParent>,
    /// The period it bills.
    pub period: Option<Period>,
    /// Its price (before API version 2025-03-31).
    pub price: Option<Price>,
    /// Its pricing (since API version 2025-03-31).
    pub pricing: Option<Pricing>,
}

/// `parent` of an invoice line.
#[derive(Debug, Deserialize)]
pub struct LineParent {
    /// Set when the line bills a subscription item.
    pub subscription_item_details: Option<LineDetails>,
}

/// `parent.subscription_item_details` of an invoice line.
#[derive(Debug, Deserialize)]
pub struct LineDetails {
    /// Whether it prorates a change.
    #[serde(default, deserialize_with = "nullable")]
    pub proration: bool,
}

impl InvoiceLine {
    /// Whether it bills a subscription's period itself (not a proration
    /// of a change, not a one-off item).
    pub fn bills_a_period(&self) -> bool {
        let old = self.kind.as_deref() == Some("subscription") && self.proration != Some(true);
        let new = self
            .parent
            .as_ref()
            .and_then(|p| p.subscription_item_details.as_ref())
            .is_some_and(|d| !d.proration);
        old || new
    }
}

/// A line's period.
#[derive(Debug, Deserialize)]
pub struct Period {
    /// Start, Unix seconds.
    pub start: i64,
    /// End, Unix seconds.
    pub end: i64,
}

/// `pricing` of an invoice line.
#[derive(Debug, Deserialize)]
pub struct Pricing {
    /// The price it was billed at.
    pub price_details: Option<PriceDetails>,
}

/// `pricing.price_details`.
#[derive(Debug, Deserialize)]
pub struct PriceDetails {
    /// `price_…`.
    pub price: Option<String>,
    /// `prod_…`.
    pub product: Option<String>,
}

impl Invoice {
    /// The subscription billed, if any, wherever this API version puts it.
    pub fn subscription_id(&self) -> Option<&str> {
        self.subscription.as_ref().map(Expandable::id).or_else(|| {
            self.parent
                .as_ref()?
                .subscription_details
                .as_ref()?
                .subscription
                .as_ref()
                .map(Expandable::id)
        })
    }

    /// The metadata of the subscription billed, then the invoice's own.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        let details = self
            .parent
            .as_ref()
            .and_then(|p| p.subscription_details.as_ref())
            .or(self.subscription_details.as_ref());
        details
            .and_then(|d| d.metadata.get(key))
            .or_else(|| self.metadata.get(key))
            .map(String::as_str)
    }

    /// The lines billing a subscription's period: their prices and periods.
    pub fn billed(&self) -> Billed {
        let lines = self
            .lines
            .iter()
            .flat_map(|l| &l.data)
            .filter(|line| line.bills_a_period())
            .filter_map(|line| {
                let price = if let Some(price) = &line.price {
                    (
                        price.id.clone(),
                        price.product.as_ref().map(|p| p.id().to_owned()),
                    )
                } else {
                    let details = line.pricing.as_ref()?.price_details.as_ref()?;
                    (details.price.clone()?, details.product.clone())
                };
                Some(BilledLine {
                    price,
                    period: line.period.as_ref().map(|p| (p.start, p.end)),
                })
            })
            .collect();
        Billed { lines }
    }
}

/// A price id and its product id, as a plan is looked up by.
pub type PriceRef = (String, Option<String>);

/// What an invoice bills: its lines that bill a subscription's period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Billed {
    /// The lines, in the invoice's order.
    pub lines: Vec<BilledLine>,
}

/// A line of an invoice billing a subscription's period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BilledLine {
    /// Its price and product.
    pub price: PriceRef,
    /// The period it bills (start, end; Unix seconds).
    pub period: Option<(i64, i64)>,
}

impl Billed {
    /// The prices billed.
    pub fn prices(&self) -> Vec<PriceRef> {
        self.lines.iter().map(|line| line.price.clone()).collect()
    }

    /// The latest period billed at `price` (the plan's).
    pub fn period_of(&self, price: &str) -> Option<(i64, i64)> {
        self.lines
            .iter()
            .filter(|line| line.price.0 == price)
            .filter_map(|line| line.period)
            .max_by_key(|&(_, end)| end)
    }
}

/// A payment intent.
#[derive(Debug, Deserialize)]
pub struct PaymentIntent {
    /// `pi_…`.
    pub id: String,
    /// What was received, in the currency's smallest unit.
    #[serde(default, deserialize_with = "nullable")]
    pub amount_received: i64,
    /// The currency, e.g. `usd`.
    #[serde(default, deserialize_with = "nullable")]
    pub currency: String,
    /// Metadata (`account_id`, `credits`, `credits_expire_at`, …).
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: Metadata,
}

/// A completed Checkout session.
#[derive(Debug, Deserialize)]
pub struct CheckoutSession {
    /// `cs_…`.
    pub id: String,
    /// When it was made, Unix seconds.
    pub created: i64,
    /// `pi_…` in payment mode.
    pub payment_intent: Option<Expandable>,
    /// The app's own reference, set when the session was created (the account).
    pub client_reference_id: Option<String>,
    /// `cus_…`.
    pub customer: Option<Expandable>,
    /// `sub_…` in subscription mode.
    pub subscription: Option<Expandable>,
    /// `payment`, `subscription` or `setup`.
    #[serde(default, deserialize_with = "nullable")]
    pub mode: String,
    /// `paid`, `unpaid` or `no_payment_required`.
    #[serde(default, deserialize_with = "nullable")]
    pub payment_status: String,
    /// Metadata (`account_id`, `user_id`, `plan`, `price_id`, `credits`,
    /// `credits_expire_at`).
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: Metadata,
}

/// The account an object's metadata names: `account_id`, else `user_id`.
pub fn account_in(metadata: &Metadata) -> Option<&str> {
    metadata
        .get("account_id")
        .or_else(|| metadata.get("user_id"))
        .map(String::as_str)
        .filter(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stripe's own example objects (`tests/fixtures/stripe.json`).
    fn fixture(name: &str) -> serde_json::Value {
        let text = include_str!("../tests/fixtures/stripe.json");
        let all: serde_json::Value = serde_json::from_str(text).expect("fixtures parse");
        all[name].clone()
    }

    #[test]
    fn stripe_example_objects_parse_old_and_new_shapes() {
        let mut sub: Subscription =
            serde_json::from_value(fixture("subscription")).expect("subscription");
        assert_eq!(
            sub.customer.as_ref().map(Expandable::id),
            Some("cus_NZbFQAsc0ptasX")
        );
        assert_eq!(sub.prices()[0].id, "price_1MoS37LgUG5tbmjcCA3GTNX8");
        let price = "price_1MoS37LgUG5tbmjcCA3GTNX8";
        assert_eq!(
            sub.period(price),
            (Some(1_234_567_890), Some(1_234_567_890))
        );
        // Newer API versions: the period on the items only.
        sub.current_period_start = None;
        sub.current_period_end = None;
        if let Some(item) = sub.items.as_mut().and_then(|i| i.data.first_mut()) {
            item.current_period_start = Some(1_700_000_000);
            item.current_period_end = Some(1_702_592_000);
        }
        assert_eq!(
            sub.period(price),
            (Some(1_700_000_000), Some(1_702_592_000))
        );
        // An add-on of another interval first: the plan's item decides.
        let mut items: Vec<serde_json::Value> = vec![serde_json::json!({
            "price": {"id": "price_addon_yearly"},
            "current_period_start": 1_690_000_000,
            "current_period_end": 1_721_536_000
        })];
        items.extend(
            fixture("subscription")["items"]["data"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        items[1]["current_period_start"] = serde_json::json!(1_700_000_000);
        items[1]["current_period_end"] = serde_json::json!(1_702_592_000);
        let mut mixed = fixture("subscription");
        mixed["current_period_start"] = serde_json::Value::Null;
        mixed["current_period_end"] = serde_json::Value::Null;
        mixed["items"]["data"] = serde_json::Value::Array(items);
        let mixed: Subscription = serde_json::from_value(mixed).expect("mixed intervals");
        assert_eq!(
            mixed.period(price),
            (Some(1_700_000_000), Some(1_702_592_000))
        );
        assert_eq!(
            mixed.period("price_unknown"),
            (Some(1_690_000_000), Some(1_721_536_000))
        );

        let invoice: Invoice = serde_json::from_value(fixture("invoice")).expect("invoice");
        assert_eq!(
            invoice.subscription_id(),
            None,
            "the example bills no subscription"
        );
        let item = |proration: bool| {
            serde_json::json!({"type": "subscription_item_details",
                "subscription_item_details": {"subscription": "sub_1", "proration": proration}})
        };
        let newer: Invoice = serde_json::from_value(serde_json::json!({
            "id": "in_1",
            "created": 15,
            "billing_reason": "subscription_cycle",
            "amount_paid": 2000,
            "parent": {"subscription_details": {"subscription": "sub_1", "metadata": {"account_id": "org_1"}}},
            "lines": {"data": [
                {"period": {"start": 5, "end": 20}, "parent": item(true),
                    "pricing": {"price_details": {"price": "price_old", "product": "prod_0"}}},
                {"period": {"start": 1, "end": 9}, "parent": {"type": "invoice_item_details",
                    "invoice_item_details": {"proration": false}},
                    "pricing": {"price_details": {"price": "price_item", "product": "prod_9"}}},
                {"period": {"start": 10, "end": 20}, "parent": item(false),
                    "pricing": {"price_details": {"price": "price_1", "product": "prod_1"}}},
                {"period": {"start": 20, "end": 30}, "parent": item(false),
                    "pricing": {"price_details": {"price": "price_2", "product": "prod_1"}}}
            ]}
        }))
        .expect("invoice of a newer API version");
        assert_eq!(newer.subscription_id(), Some("sub_1"));
        assert_eq!(newer.metadata_value("account_id"), Some("org_1"));
        let billed = newer.billed();
        assert_eq!(
            billed.prices(),
            vec![
                ("price_1".to_owned(), Some("prod_1".to_owned())),
                ("price_2".to_owned(), Some("prod_1".to_owned()))
            ],
            "prorations and one-off items left out"
        );
        assert_eq!(billed.period_of("price_1"), Some((10, 20)));
        assert_eq!(billed.period_of("price_2"), Some((20, 30)));
        assert_eq!(billed.period_of("price_old"), None, "a proration");
        let older: Invoice = serde_json::from_value(serde_json::json!({
            "id": "in_2", "created": 15, "subscription": "sub_1",
            "subscription_details": {"metadata": null},
            "metadata": null,
            "lines": {"data": [
                {"type": "subscription", "proration": true, "period": {"start": 5, "end": 20},
                    "price": {"id": "price_old", "product": "prod_0"}},
                {"type": "invoiceitem", "proration": false, "period": {"start": 1, "end": 9},
                    "price": {"id": "price_item", "product": "prod_9"}},
                {"type": "subscription", "proration": false, "period": {"start": 10, "end": 20},
                    "price": {"id": "price_1", "product": "prod_1"}}
            ]}
        }))
        .expect("invoice of an older API version, null metadata");
        assert_eq!(older.metadata_value("account_id"), None);
        let billed = older.billed();
        assert_eq!(
            billed.prices(),
            vec![("price_1".to_owned(), Some("prod_1".to_owned()))]
        );
        assert_eq!(billed.period_of("price_1"), Some((10, 20)));

        let intent: PaymentIntent =
            serde_json::from_value(fixture("payment_intent")).expect("intent");
        assert_eq!(intent.amount_received, 1099);
        let session: CheckoutSession =
            serde_json::from_value(fixture("checkout.session")).expect("session");
        assert!(session.id.starts_with("cs_"));
        let mut bare = fixture("checkout.session");
        bare["metadata"] = serde_json::Value::Null;
        bare["mode"] = serde_json::Value::Null;
        let bare: CheckoutSession = serde_json::from_value(bare).expect("null metadata");
        assert!(bare.metadata.is_empty() && bare.mode.is_empty());
        let event: Event = serde_json::from_value(fixture("event")).expect("event");
        assert!(event.id.starts_with("evt_"));
    }
}
