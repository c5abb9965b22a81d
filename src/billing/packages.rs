//! The credit-package catalogue, from a TOML file or the built-in defaults.

use std::path::Path;

use serde::Deserialize;

use crate::ledger::MAX_CREDITS;

/// A credit package a customer can buy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditPackage {
    /// Chosen in the package file, e.g. `credits_basic`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Credits bought.
    pub credits: i64,
    /// Credits added on top, free.
    pub bonus_credits: i64,
    /// Price in the currency's smallest unit.
    pub price_amount: i64,
    /// Lower-case ISO 4217 code.
    pub currency: String,
    /// Stripe Price to charge; without one, Checkout gets inline price data.
    pub stripe_price_id: Option<String>,
    /// Days after the payment at which the purchased credits expire; never when absent.
    pub expires_after_days: Option<i64>,
}

impl CreditPackage {
    /// Credits plus bonus: what one purchase adds to the balance.
    pub fn total_credits(&self) -> i64 {
        self.credits + self.bonus_credits
    }
}

/// The packages on sale, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageCatalog {
    packages: Vec<CreditPackage>,
}

/// Why a package file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The file could not be read.
    #[error("cannot read package file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("package file {path}: {message}")]
    Parse {
        /// The path given.
        path: String,
        /// The parser's message, naming the line.
        message: String,
    },
    /// A package breaks a rule.
    #[error("package file {path}, line {line}: {message}")]
    Invalid {
        /// The path given.
        path: String,
        /// The line of the offending package.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackageFile {
    #[serde(default)]
    package: Vec<toml::Spanned<RawPackage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    id: String,
    name: String,
    credits: i64,
    #[serde(default)]
    bonus_credits: i64,
    price_amount: i64,
    #[serde(default = "default_currency")]
    currency: String,
    #[serde(default)]
    stripe_price_id: Option<String>,
    #[serde(default)]
    expires_after_days: Option<i64>,
}

fn default_currency() -> String {
    "usd".to_owned()
}

impl Default for PackageCatalog {
    /// The seed's Starter and Basic packages.
    fn default() -> Self {
        let package = |id: &str, name: &str, credits, bonus_credits, price_amount| CreditPackage {
            id: id.to_owned(),
            name: name.to_owned(),
            credits,
            bonus_credits,
            price_amount,
            currency: default_currency(),
            stripe_price_id: None,
            expires_after_days: None,
        };
        Self {
            packages: vec![
                package("credits_starter", "Starter", 10_000, 0, 999),
                package("credits_basic", "Basic", 50_000, 5_000, 3999),
            ],
        }
    }
}

impl PackageCatalog {
    /// Reads and checks a package file.
    pub fn load(path: &Path) -> Result<Self, PackageError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PackageError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks the text of a package file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PackageError> {
        let file: PackageFile = toml::from_str(text)
            .map_err(|error| PackageError::Parse { path: origin.to_owned(), message: error.to_string() })?;
        let mut packages: Vec<CreditPackage> = Vec::with_capacity(file.package.len());
        for spanned in file.package {
            let line = text[..spanned.span().start].matches('\n').count() + 1;
            let raw = spanned.into_inner();
            let invalid = |message: String| PackageError::Invalid { path: origin.to_owned(), line, message };
            if raw.id.trim().is_empty() || raw.id.len() > 64 {
                return Err(invalid("id must be 1 to 64 characters".into()));
            }
            if packages.iter().any(|package| package.id == raw.id) {
                return Err(invalid(format!("duplicate package id {:?}", raw.id)));
            }
            if raw.name.trim().is_empty() {
                return Err(invalid("name must not be blank".into()));
            }
            if raw.credits < 1 || raw.bonus_credits < 0 || raw.credits.saturating_add(raw.bonus_credits) > MAX_CREDITS {
                return Err(invalid(format!(
                    "credits must be at least 1 and bonus_credits at least 0, together at most {MAX_CREDITS}"
                )));
            }
            // Checkout cannot take a free payment, and would never report it paid.
            if raw.price_amount < 1 || raw.price_amount > i64::from(i32::MAX) {
                return Err(invalid("price_amount must be between 1 and 2147483647".into()));
            }
            let currency = raw.currency.to_ascii_lowercase();
            if matches!(currency.parse::<stripe_types::Currency>(), Ok(stripe_types::Currency::Unknown(_)) | Err(_)) {
                return Err(invalid(format!("currency {:?} is not a currency Stripe accepts", raw.currency)));
            }
            if raw.stripe_price_id.as_deref().is_some_and(|id| !id.starts_with("price_")) {
                return Err(invalid("stripe_price_id must start with price_".into()));
            }
            if raw.expires_after_days.is_some_and(|days| !(1..=36_500).contains(&days)) {
                return Err(invalid("expires_after_days must be between 1 and 36500".into()));
            }
            packages.push(CreditPackage {
                id: raw.id,
                name: raw.name,
                credits: raw.credits,
                bonus_credits: raw.bonus_credits,
                price_amount: raw.price_amount,
                currency,
                stripe_price_id: raw.stripe_price_id.filter(|id| !id.is_empty()),
                expires_after_days: raw.expires_after_days,
            });
        }
        if packages.is_empty() {
            return Err(PackageError::Parse { path: origin.to_owned(), message: "no [[package]] defined".into() });
        }
        Ok(Self { packages })
    }

    /// Every package, in file order.
    pub fn all(&self) -> &[CreditPackage] {
        &self.packages
    }

    /// The package with this id.
    pub fn get(&self, id: &str) -> Option<&CreditPackage> {
        self.packages.iter().find(|package| package.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seed_packages() {
        let catalog = PackageCatalog::default();
        let basic = catalog.get("credits_basic").expect("basic");
        assert_eq!((basic.credits, basic.bonus_credits, basic.price_amount), (50_000, 5_000, 3999));
        assert_eq!(basic.total_credits(), 55_000);
        assert_eq!(catalog.get("credits_starter").map(|p| p.price_amount), Some(999));
    }

    #[test]
    fn a_valid_file_parses_with_defaults_filled_in() {
        let text = "[[package]]\nid = \"p1\"\nname = \"One\"\ncredits = 5\nprice_amount = 100\nstripe_price_id = \"price_123\"\n";
        let catalog = PackageCatalog::parse(text, "t.toml").expect("valid");
        let package = &catalog.all()[0];
        assert_eq!(package.currency, "usd");
        assert_eq!(package.bonus_credits, 0);
        assert_eq!(package.stripe_price_id.as_deref(), Some("price_123"));
    }

    #[test]
    fn an_invalid_package_names_its_line() {
        let text = "[[package]]\nid = \"a\"\nname = \"A\"\ncredits = 5\nprice_amount = 1\n\n[[package]]\nid = \"b\"\nname = \"B\"\ncredits = -5\nprice_amount = 1\n";
        let error = PackageCatalog::parse(text, "t.toml").expect_err("negative credits").to_string();
        assert!(error.contains("line 7"), "{error}");
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let error = PackageCatalog::parse("[[package]]\nid = \"a\"\nname = \n", "t.toml").expect_err("bad").to_string();
        assert!(error.contains("line 3"), "{error}");
    }

    #[test]
    fn free_packages_and_unknown_currencies_are_refused() {
        let free = "[[package]]\nid = \"a\"\nname = \"A\"\ncredits = 5\nprice_amount = 0\n";
        assert!(PackageCatalog::parse(free, "t").is_err());
        let zzz = "[[package]]\nid = \"a\"\nname = \"A\"\ncredits = 5\nprice_amount = 1\ncurrency = \"zzz\"\n";
        assert!(PackageCatalog::parse(zzz, "t").is_err());
        let eur = "[[package]]\nid = \"a\"\nname = \"A\"\ncredits = 5\nprice_amount = 1\ncurrency = \"EUR\"\n";
        assert_eq!(PackageCatalog::parse(eur, "t").expect("eur").all()[0].currency, "eur");
    }

    #[test]
    fn unknown_keys_and_duplicates_are_refused() {
        let dup = "[[package]]\nid = \"a\"\nname = \"A\"\ncredits = 5\nprice_amount = 1\n[[package]]\nid = \"a\"\nname = \"A\"\ncredits = 5\nprice_amount = 1\n";
        assert!(PackageCatalog::parse(dup, "t").is_err());
        let unknown = "[[package]]\nid = \"a\"\nname = \"A\"\ncredits = 5\nprice_amount = 1\nprice = 3\n";
        assert!(PackageCatalog::parse(unknown, "t").is_err());
    }
}
