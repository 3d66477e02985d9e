//! The pure half of the demo: [`Planner`] turns a seed into the shop's actions, tick by tick.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::catalogue::{CATALOGUE, FLASH_WEIGHT_MAX, LOCATIONS, target};

/// Orders in one flash sale, and the window they arrive in.
const FLASH_ORDERS: usize = 50;
const FLASH_WINDOW_MS: u64 = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub sku: usize,
    pub quantity: i64,
}

/// What happens to a checkout after its hold; delays in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Paid, then shipped.
    Ship { commit_ms: u64, ship_ms: u64 },
    /// Paid; it waits in the warehouse.
    Keep { commit_ms: u64 },
    /// Paid, then sent back.
    Return { commit_ms: u64, return_ms: u64 },
    /// Cancelled at checkout.
    Cancel { cancel_ms: u64 },
    /// Left in the cart: the hold runs out.
    Abandon,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub number: u64,
    pub lines: Vec<Line>,
    /// Sold over the counter: drawn from the store only.
    pub in_store: bool,
    pub ttl_seconds: u64,
    pub fate: Fate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashOrder {
    pub delay_ms: u64,
    /// Multiplied by the sale's scale, which follows the stock on hand when it starts.
    pub quantity: i64,
    /// Left in the cart (with an abandoned cart's TTL) instead of paid at once.
    pub abandon: bool,
    pub ttl_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashSale {
    pub number: u64,
    pub sku: usize,
    pub orders: Vec<FlashOrder>,
}

/// For one SKU at a restock check: where a delivery would go and how full it would fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restock {
    pub location: usize,
    pub fill_pct: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Checkout(Order),
    /// Cloud Scheduler's job, run as often as the cloud would: books lapsed holds as expired.
    Expire,
    /// Looks at every SKU and restocks those under a quarter of their target (not the ones in `skip`: a flash
    /// sale's SKU stays sold out until its own restock). One plan per SKU, drawn whether or not it is used.
    RestockCheck {
        plans: Vec<Restock>,
        skip: Vec<usize>,
    },
    FlashSale(FlashSale),
    /// The delivery after a flash sale.
    FlashRestock {
        sku: usize,
    },
}

/// Every decision of the demo, from one seeded generator. Pure: ticks in, actions out.
///
/// ChaCha8 (rand_chacha) rather than `SmallRng` or a hand-rolled xorshift: it is already in the build through
/// `rand`, and its stream for a seed is reproducible on every platform (`SmallRng`'s algorithm may change between
/// releases), which is what "the same seed plays the same shop" needs.
pub struct Planner {
    rng: ChaCha8Rng,
    rate: u64,
    abandoned_ttl_seconds: u64,
    tick: u64,
    orders: u64,
    flash_sales: u64,
    /// (due tick, sku): flash-sale restocks to come.
    flash_restocks: Vec<(u64, usize)>,
}

impl Planner {
    pub fn new(seed: u64, rate: u32, abandoned_ttl_seconds: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            rate: u64::from(rate.max(1)),
            abandoned_ttl_seconds: abandoned_ttl_seconds.max(1),
            tick: 0,
            orders: 0,
            flash_sales: 0,
            flash_restocks: Vec::new(),
        }
    }

    /// Opening stock per SKU and location: the target split by location share, give or take a fifth.
    pub fn opening(&mut self) -> Vec<(usize, usize, i64)> {
        let mut out = Vec::new();
        for sku in 0..CATALOGUE.len() {
            for (location, place) in LOCATIONS.iter().enumerate() {
                let jitter = self.rng.gen_range(80..=120);
                out.push((sku, location, (target(sku, self.rate) * place.share_pct * jitter / 10_000).max(1)));
            }
        }
        out
    }

    fn ticks(&self, seconds: u64) -> u64 {
        self.rate * seconds
    }

    /// What happens at the next tick: the scheduled work that falls due, then one shopper.
    pub fn next_actions(&mut self) -> Vec<Action> {
        let n = self.tick;
        self.tick += 1;
        let mut out = Vec::new();
        if n % self.ticks(3) == self.ticks(3) - 1 {
            out.push(Action::Expire);
        }
        let due: Vec<usize> = self.flash_restocks.iter().filter(|(at, _)| *at <= n).map(|(_, sku)| *sku).collect();
        self.flash_restocks.retain(|(at, _)| *at > n);
        out.extend(due.into_iter().map(|sku| Action::FlashRestock { sku }));
        if n % self.ticks(5) == self.ticks(2) {
            let plans = (0..CATALOGUE.len())
                .map(|_| Restock { location: self.location(), fill_pct: self.rng.gen_range(80..=110) })
                .collect();
            let skip = self.flash_restocks.iter().map(|(_, sku)| *sku).collect();
            out.push(Action::RestockCheck { plans, skip });
        }
        // The first flash sale comes early, so a newcomer sees one; then one a minute.
        if n >= self.ticks(5) && (n - self.ticks(5)).is_multiple_of(self.ticks(60)) {
            let sale = self.flash_sale();
            self.flash_restocks.push((n + self.ticks(20), sale.sku));
            out.push(Action::FlashSale(sale));
        }
        out.push(Action::Checkout(self.order()));
        out
    }

    fn order(&mut self) -> Order {
        self.orders += 1;
        let count = pick(&mut self.rng, &[(1, 60), (2, 30), (3, 10)]);
        let mut lines: Vec<Line> = Vec::new();
        for _ in 0..count {
            let sku = self.product();
            // A second pick of the same product is a second unit of it, as a shopper's cart would merge it.
            match lines.iter_mut().find(|l| l.sku == sku) {
                Some(line) => line.quantity += 1,
                None => lines.push(Line { sku, quantity: pick(&mut self.rng, &[(1, 80), (2, 15), (3, 5)]) }),
            }
        }
        let in_store = self.rng.gen_bool(0.1);
        let fate = match pick(&mut self.rng, &[(0, 52), (1, 16), (2, 7), (3, 7), (4, 18)]) {
            0 => Fate::Ship { commit_ms: self.rng.gen_range(300..4_000), ship_ms: self.rng.gen_range(1_000..8_000) },
            1 => Fate::Keep { commit_ms: self.rng.gen_range(300..4_000) },
            2 => {
                Fate::Return { commit_ms: self.rng.gen_range(300..4_000), return_ms: self.rng.gen_range(2_000..10_000) }
            }
            3 => Fate::Cancel { cancel_ms: self.rng.gen_range(500..5_000) },
            _ => Fate::Abandon,
        };
        let ttl_seconds = match fate {
            Fate::Abandon => self.abandoned_ttl(),
            _ => self.rng.gen_range(60..=300),
        };
        Order { number: self.orders, lines, in_store, ttl_seconds, fate }
    }

    fn abandoned_ttl(&mut self) -> u64 {
        let t = self.abandoned_ttl_seconds;
        self.rng.gen_range((t * 2 / 3).max(1)..=(t * 4 / 3).max(1))
    }

    fn flash_sale(&mut self) -> FlashSale {
        self.flash_sales += 1;
        let quiet: Vec<(usize, u32)> =
            CATALOGUE.iter().enumerate().filter(|(_, p)| p.weight <= FLASH_WEIGHT_MAX).map(|(i, _)| (i, 1)).collect();
        let sku = pick(&mut self.rng, &quiet);
        let orders = (0..FLASH_ORDERS)
            .map(|_| {
                let delay_ms = self.rng.gen_range(0..FLASH_WINDOW_MS);
                let quantity = self.rng.gen_range(1..=2);
                let abandon = self.rng.gen_bool(0.1);
                let ttl_seconds = if abandon { self.abandoned_ttl() } else { 300 };
                FlashOrder { delay_ms, quantity, abandon, ttl_seconds }
            })
            .collect();
        FlashSale { number: self.flash_sales, sku, orders }
    }

    fn product(&mut self) -> usize {
        let weights: Vec<(usize, u32)> = CATALOGUE.iter().enumerate().map(|(i, p)| (i, p.weight)).collect();
        pick(&mut self.rng, &weights)
    }

    fn location(&mut self) -> usize {
        let weights: Vec<(usize, u32)> =
            LOCATIONS.iter().enumerate().map(|(i, p)| (i, p.share_pct.unsigned_abs() as u32)).collect();
        pick(&mut self.rng, &weights)
    }
}

/// A weighted choice among `(value, weight)`.
fn pick<T: Copy>(rng: &mut ChaCha8Rng, choices: &[(T, u32)]) -> T {
    let total: u32 = choices.iter().map(|(_, w)| w).sum();
    let mut roll = rng.gen_range(0..total.max(1));
    for (value, weight) in choices {
        if roll < *weight {
            return *value;
        }
        roll -= weight;
    }
    choices[choices.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans(seed: u64, ticks: usize) -> Vec<Action> {
        let mut planner = Planner::new(seed, 20, 30);
        (0..ticks).flat_map(|_| planner.next_actions()).collect()
    }

    #[test]
    fn the_same_seed_plays_the_same_shop() {
        assert_eq!(plans(42, 3_000), plans(42, 3_000));
        assert_ne!(plans(42, 3_000), plans(43, 3_000));
    }

    #[test]
    fn two_minutes_of_plans_hold_every_kind_of_traffic() {
        let actions = plans(7, 20 * 120);
        let fates: Vec<Fate> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Checkout(o) => Some(o.fate),
                _ => None,
            })
            .collect();
        assert!(fates.iter().any(|f| matches!(f, Fate::Ship { .. })));
        assert!(fates.iter().any(|f| matches!(f, Fate::Keep { .. })));
        assert!(fates.iter().any(|f| matches!(f, Fate::Return { .. })));
        assert!(fates.iter().any(|f| matches!(f, Fate::Cancel { .. })));
        assert!(fates.iter().any(|f| matches!(f, Fate::Abandon)));
        let count = |pred: fn(&Action) -> bool| actions.iter().filter(|a| pred(a)).count();
        assert_eq!(count(|a| matches!(a, Action::FlashSale(_))), 2, "one at 5 s, one at 65 s");
        assert_eq!(count(|a| matches!(a, Action::FlashRestock { .. })), 2);
        assert_eq!(count(|a| matches!(a, Action::Expire)), 40);
        assert_eq!(count(|a| matches!(a, Action::RestockCheck { .. })), 24);
    }

    #[test]
    fn bestsellers_sell_far_more_than_the_long_tail() {
        let mut units = [0i64; CATALOGUE.len()];
        for action in plans(1, 20_000) {
            if let Action::Checkout(order) = action {
                for line in order.lines {
                    units[line.sku] += line.quantity;
                }
            }
        }
        assert!(units[0] > 10 * units[CATALOGUE.len() - 1], "{units:?}");
    }

    #[test]
    fn flash_sales_pick_quiet_products_and_hold_back_their_restock() {
        let actions = plans(3, 20 * 30);
        let sale = actions.iter().find_map(|a| match a {
            Action::FlashSale(s) => Some(s.clone()),
            _ => None,
        });
        let Some(sale) = sale else { panic!("no flash sale in 30 s") };
        assert!(CATALOGUE[sale.sku].weight <= FLASH_WEIGHT_MAX);
        assert_eq!(sale.orders.len(), FLASH_ORDERS);
        assert!(sale.orders.iter().all(|o| o.delay_ms < FLASH_WINDOW_MS));
        let skipped =
            actions.iter().any(|a| matches!(a, Action::RestockCheck { skip, .. } if skip.contains(&sale.sku)));
        assert!(skipped, "a restock check during the sale leaves its SKU sold out");
    }
}
