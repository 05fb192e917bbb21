//! Money and totals. This is the only place a proposal's totals are computed: the API stores
//! them, events carry them, PDFs print them, all from `compute_totals`.
//!
//! Amounts are integer counts of the currency's minor unit; quantities are thousandths of a
//! unit; tax rates are parts per million. Rounding is half away from zero, per line, so a
//! printed line's tax always adds up to the printed tax total.

use std::fmt;

/// Largest absolute amount accepted anywhere: keeps every sum far from i64 overflow.
const MAX_ABS_MINOR: i64 = 1_000_000_000_000_000;
const MAX_QUANTITY_MILLI: i64 = 1_000_000_000_000;
const MAX_TAX_RATE_PPM: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("quantity_milli must be between 1 and {MAX_QUANTITY_MILLI}, got {0}")]
    Quantity(i64),
    #[error("unit_price_minor must be between -{MAX_ABS_MINOR} and {MAX_ABS_MINOR}, got {0}")]
    UnitPrice(i64),
    #[error("tax_rate_ppm must be between 0 and {MAX_TAX_RATE_PPM} (0 % to 100 %), got {0}")]
    TaxRate(i64),
    #[error("currency must be a three-letter ISO 4217 code in upper case, got {0:?}")]
    Currency(String),
    #[error("the proposal total exceeds the largest supported amount")]
    Overflow,
}

/// The priced inputs of one line item, checked on construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineItemAmounts {
    quantity_milli: i64,
    unit_price_minor: i64,
    tax_rate_ppm: i64,
}

impl LineItemAmounts {
    pub fn parse(quantity_milli: i64, unit_price_minor: i64, tax_rate_ppm: i64) -> Result<Self, MoneyError> {
        if !(1..=MAX_QUANTITY_MILLI).contains(&quantity_milli) {
            return Err(MoneyError::Quantity(quantity_milli));
        }
        if !(-MAX_ABS_MINOR..=MAX_ABS_MINOR).contains(&unit_price_minor) {
            return Err(MoneyError::UnitPrice(unit_price_minor));
        }
        if !(0..=MAX_TAX_RATE_PPM).contains(&tax_rate_ppm) {
            return Err(MoneyError::TaxRate(tax_rate_ppm));
        }
        Ok(Self { quantity_milli, unit_price_minor, tax_rate_ppm })
    }

    pub fn quantity_milli(&self) -> i64 {
        self.quantity_milli
    }
    pub fn unit_price_minor(&self) -> i64 {
        self.unit_price_minor
    }
    pub fn tax_rate_ppm(&self) -> i64 {
        self.tax_rate_ppm
    }

    /// The line's subtotal and tax, each rounded half away from zero.
    pub fn amounts(&self) -> Result<LineAmounts, MoneyError> {
        let subtotal = div_round(i128::from(self.quantity_milli) * i128::from(self.unit_price_minor), 1_000);
        let tax = div_round(subtotal * i128::from(self.tax_rate_ppm), 1_000_000);
        let to_i64 = |v: i128| i64::try_from(v).ok().filter(|v| v.abs() <= MAX_ABS_MINOR).ok_or(MoneyError::Overflow);
        Ok(LineAmounts { subtotal_minor: to_i64(subtotal)?, tax_minor: to_i64(tax)? })
    }
}

fn div_round(n: i128, d: i128) -> i128 {
    let q = n / d;
    let r = n % d;
    if 2 * r.abs() >= d { q + n.signum() } else { q }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LineAmounts {
    pub subtotal_minor: i64,
    pub tax_minor: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Totals {
    pub subtotal_minor: i64,
    pub tax_minor: i64,
    pub total_minor: i64,
}

/// Totals of a proposal from its line items: the sum of per-line rounded amounts.
pub fn compute_totals<'a>(items: impl IntoIterator<Item = &'a LineItemAmounts>) -> Result<Totals, MoneyError> {
    let mut totals = Totals::default();
    for item in items {
        let line = item.amounts()?;
        totals.subtotal_minor = totals.subtotal_minor.checked_add(line.subtotal_minor).ok_or(MoneyError::Overflow)?;
        totals.tax_minor = totals.tax_minor.checked_add(line.tax_minor).ok_or(MoneyError::Overflow)?;
    }
    totals.total_minor = totals.subtotal_minor.checked_add(totals.tax_minor).ok_or(MoneyError::Overflow)?;
    if totals.total_minor.abs() > MAX_ABS_MINOR {
        return Err(MoneyError::Overflow);
    }
    Ok(totals)
}

/// An ISO 4217 currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let bytes = code.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(MoneyError::Currency(code.to_owned()));
        }
        Ok(Self([bytes[0], bytes[1], bytes[2]]))
    }

    pub fn code(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Digits after the decimal point (ISO 4217 exponent) for the currencies that differ from 2.
    pub fn minor_digits(&self) -> u32 {
        match self.code() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
            | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }

    /// `1234567` EUR → `"1,234,567.00"`-style text without the code: `12,345.67`.
    pub fn format_minor(&self, amount_minor: i64) -> String {
        let digits = self.minor_digits();
        let scale = 10u64.pow(digits);
        let abs = amount_minor.unsigned_abs();
        let (major, minor) = (abs / scale, abs % scale);
        let major = major.to_string();
        let mut grouped = String::with_capacity(major.len() + major.len() / 3);
        for (i, c) in major.chars().enumerate() {
            if i > 0 && (major.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        let sign = if amount_minor < 0 { "-" } else { "" };
        if digits == 0 {
            format!("{sign}{grouped}")
        } else {
            format!("{sign}{grouped}.{minor:0width$}", width = digits as usize)
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(q: i64, p: i64, t: i64) -> LineItemAmounts {
        LineItemAmounts::parse(q, p, t).unwrap()
    }

    #[test]
    fn line_amounts_round_half_away_from_zero() {
        // 1.5 × 0.33 = 0.495 → 0.50; tax 20 % of 0.50 = 0.10
        assert_eq!(item(1_500, 33, 200_000).amounts().unwrap(), LineAmounts { subtotal_minor: 50, tax_minor: 10 });
        // discount line: -0.495 → -0.50
        assert_eq!(item(1_500, -33, 0).amounts().unwrap().subtotal_minor, -50);
        // 8.875 % of 10.00 = 0.8875 → 0.89
        assert_eq!(item(1_000, 1_000, 88_750).amounts().unwrap().tax_minor, 89);
    }

    #[test]
    fn totals_are_sums_of_rounded_lines() {
        let items = [item(2_000, 10_000, 200_000), item(1_000, 333, 70_000)];
        let t = compute_totals(&items).unwrap();
        assert_eq!(t, Totals { subtotal_minor: 20_333, tax_minor: 4_000 + 23, total_minor: 24_356 });
        assert_eq!(compute_totals(&[]).unwrap(), Totals::default());
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert_eq!(LineItemAmounts::parse(0, 1, 0), Err(MoneyError::Quantity(0)));
        assert_eq!(LineItemAmounts::parse(1, 1, 1_000_001), Err(MoneyError::TaxRate(1_000_001)));
        assert!(LineItemAmounts::parse(1, i64::MAX, 0).is_err());
        let big = item(MAX_QUANTITY_MILLI, MAX_ABS_MINOR, 0);
        assert_eq!(big.amounts(), Err(MoneyError::Overflow));
    }

    #[test]
    fn currency_parses_and_formats() {
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(eur.format_minor(123_456_789), "1,234,567.89");
        assert_eq!(eur.format_minor(-5), "-0.05");
        assert_eq!(Currency::parse("JPY").unwrap().format_minor(1000), "1,000");
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
    }
}
