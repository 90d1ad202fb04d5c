//! What a subscription object says of what was bought: its items (price,
//! product, lookup key, quantity), cancellation and trial. Read tolerantly
//! across API versions: before 2018 a subscription had one `plan` and a
//! `quantity` at the top; later, `items` with a `price` (and a `plan`) each;
//! a price's `product` is an id or, expanded, an object.

use serde::{Deserialize, Serialize};

use super::{Reference, id_of};

/// Passed to the store as JSON (`sw_apply_event`'s `p_details`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Details {
    pub items: Vec<Item>,
    pub cancel_at_period_end: bool,
    /// Unix seconds.
    pub cancel_at: Option<i64>,
    /// Unix seconds.
    pub trial_end: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Item {
    pub price: Option<String>,
    pub product: Option<String>,
    pub lookup_key: Option<String>,
    pub quantity: Option<i64>,
}

/// The fields of a subscription object that [`Details`] come from.
#[derive(Deserialize, Default)]
pub(super) struct RawDetails {
    #[serde(default)]
    cancel_at_period_end: Option<bool>,
    cancel_at: Option<i64>,
    trial_end: Option<i64>,
    /// Old API versions: the one plan, and its quantity, at the top.
    plan: Option<RawPlan>,
    quantity: Option<i64>,
}

#[derive(Deserialize)]
pub(super) struct RawItem {
    pub(super) current_period_end: Option<i64>,
    price: Option<RawPrice>,
    plan: Option<RawPlan>,
    quantity: Option<i64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPrice {
    Id(String),
    Object {
        id: String,
        product: Option<Reference>,
        lookup_key: Option<String>,
    },
}

#[derive(Deserialize)]
struct RawPlan {
    id: String,
    product: Option<Reference>,
}

impl RawItem {
    fn item(self) -> Item {
        let (plan_id, plan_product) = match self.plan {
            Some(plan) => (Some(plan.id), id_of(plan.product)),
            None => (None, None),
        };
        let (price, product, lookup_key) = match self.price {
            Some(RawPrice::Id(id)) => (Some(id), None, None),
            Some(RawPrice::Object {
                id,
                product,
                lookup_key,
            }) => (Some(id), id_of(product), lookup_key),
            None => (None, None, None),
        };
        Item {
            price: price.or(plan_id),
            product: product.or(plan_product),
            lookup_key,
            quantity: self.quantity,
        }
    }
}

impl RawDetails {
    pub(super) fn details(self, items: Vec<RawItem>) -> Details {
        let mut items: Vec<Item> = items.into_iter().map(RawItem::item).collect();
        if items.is_empty()
            && let Some(plan) = self.plan
        {
            items.push(Item {
                price: Some(plan.id),
                product: id_of(plan.product),
                lookup_key: None,
                quantity: self.quantity,
            });
        }
        Details {
            items,
            cancel_at_period_end: self.cancel_at_period_end.unwrap_or(false),
            cancel_at: self.cancel_at,
            trial_end: self.trial_end,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::event::parse_subscription;

    fn details(object: Value) -> Details {
        parse_subscription(object.to_string().as_bytes(), "username")
            .unwrap()
            .details
    }

    fn item(price: &str, product: &str, lookup_key: Option<&str>, quantity: i64) -> Item {
        Item {
            price: Some(price.into()),
            product: Some(product.into()),
            lookup_key: lookup_key.map(str::to_owned),
            quantity: Some(quantity),
        }
    }

    #[test]
    fn an_old_api_version_has_one_plan_at_the_top() {
        let read = details(
            json!({ "id": "sub_1", "status": "active", "current_period_end": 9,
            "plan": { "id": "gold", "object": "plan", "product": "prod_1" }, "quantity": 3,
            "cancel_at_period_end": true, "cancel_at": 9, "trial_end": null }),
        );
        assert_eq!(
            read,
            Details {
                items: vec![Item {
                    lookup_key: None,
                    ..item("gold", "prod_1", None, 3)
                }],
                cancel_at_period_end: true,
                cancel_at: Some(9),
                trial_end: None,
            }
        );
    }

    #[test]
    fn items_with_prices_as_in_2024_06_20() {
        let read = details(
            json!({ "id": "sub_1", "status": "trialing", "current_period_end": 9,
            "trial_end": 5, "cancel_at_period_end": false,
            "items": { "object": "list", "has_more": false, "data": [
                { "id": "si_1", "quantity": 1,
                  "plan": { "id": "price_a", "product": "prod_a" },
                  "price": { "id": "price_a", "object": "price", "product": "prod_a", "lookup_key": "basic" } },
                { "id": "si_2", "quantity": 5,
                  "price": { "id": "price_b", "object": "price", "product": "prod_b", "lookup_key": null } }
            ] } }),
        );
        assert_eq!(
            read.items,
            [
                item("price_a", "prod_a", Some("basic"), 1),
                item("price_b", "prod_b", None, 5)
            ]
        );
        assert_eq!(read.trial_end, Some(5));
    }

    #[test]
    fn basil_and_later_expanded_products_and_periods_on_items() {
        let update = parse_subscription(
            json!({ "id": "sub_1", "status": "active",
                "items": { "object": "list", "data": [
                    { "id": "si_1", "quantity": 2, "current_period_end": 7,
                      "price": { "id": "price_a", "lookup_key": "pro",
                                 "product": { "id": "prod_a", "object": "product", "name": "Pro" } } }
                ] } })
            .to_string()
            .as_bytes(),
            "username",
        )
        .unwrap();
        assert_eq!(update.current_period_end, Some(7));
        assert_eq!(
            update.details.items,
            [item("price_a", "prod_a", Some("pro"), 2)]
        );
        assert!(!update.details.cancel_at_period_end);
    }
}
