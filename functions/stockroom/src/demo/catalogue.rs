//! The demo shop's products, places and alert policies, and how much of each product it keeps.

/// A product and how often shoppers pick it: a few bestsellers and a long tail.
pub(super) struct Product {
    pub(super) sku: &'static str,
    pub(super) weight: u32,
}

pub(super) const CATALOGUE: [Product; 12] = [
    Product { sku: "TEE-ORG-BLK-M", weight: 30 },
    Product { sku: "TEE-ORG-WHT-M", weight: 18 },
    Product { sku: "HOODIE-GRY-L", weight: 12 },
    Product { sku: "MUG-ENAMEL-WHT", weight: 8 },
    Product { sku: "SOCKS-WOOL-3PK", weight: 6 },
    Product { sku: "CAP-CANVAS-NVY", weight: 5 },
    Product { sku: "TOTE-CANVAS-NAT", weight: 4 },
    Product { sku: "BOTTLE-STEEL-750", weight: 3 },
    Product { sku: "NOTEBOOK-A5-DOT", weight: 2 },
    Product { sku: "BEANIE-MERINO-RST", weight: 2 },
    Product { sku: "POSTER-A2-MAP", weight: 1 },
    Product { sku: "SCARF-LINEN-SAGE", weight: 1 },
];

/// Flash sales are limited drops of quieter products, so a burst of 50 small orders can empty them.
pub(super) const FLASH_WEIGHT_MAX: u32 = 3;

pub(super) struct Place {
    pub(super) id: &'static str,
    pub(super) name: &'static str,
    pub(super) priority: i64,
    /// Share of a SKU's opening stock kept here, in percent.
    pub(super) share_pct: i64,
}

pub(super) const LOCATIONS: [Place; 3] = [
    Place { id: "wh-east", name: "East warehouse", priority: 1, share_pct: 60 },
    Place { id: "wh-west", name: "West warehouse", priority: 2, share_pct: 30 },
    Place { id: "store-soho", name: "SoHo store", priority: 3, share_pct: 10 },
];
/// In-store sales draw from the shop floor only.
pub(super) const STORE: usize = 2;

/// A few SKUs with their own alert policy, so the dashboard shows both kinds of "low".
pub(super) const POLICIES: [(&str, Option<i64>, Option<i64>); 4] = [
    ("TEE-ORG-BLK-M", Some(3), Some(60)),
    ("HOODIE-GRY-L", None, Some(25)),
    ("MUG-ENAMEL-WHT", Some(10), None),
    ("POSTER-A2-MAP", Some(14), Some(5)),
];

/// Units of a SKU to keep: about a minute of its sales at this rate, plus a floor for the long tail, so
/// bestsellers run low and get restocked within the first minutes. (An order averages about 1.9 units.)
pub(super) fn target(sku: usize, rate: u64) -> i64 {
    let total: u64 = CATALOGUE.iter().map(|p| u64::from(p.weight)).sum();
    10 + (rate * u64::from(CATALOGUE[sku].weight) * 120 / total) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_name_is_a_valid_sku_and_location() {
        for p in &CATALOGUE {
            assert!(stockroom_domain::Sku::parse(p.sku).is_ok(), "{}", p.sku);
        }
        for l in &LOCATIONS {
            assert!(stockroom_domain::Location::parse(l.id).is_ok(), "{}", l.id);
        }
    }
}
