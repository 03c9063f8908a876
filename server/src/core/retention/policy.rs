//! The retention policy: which rules a (session, branch) group is kept by, and its compact text
//! form (`last=50,within=7days,daily=30`), parsed once with errors that name the bad item.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A retention policy for one group of checkpoints.
///
/// A count of zero means "this rule is off", not "keep none". All counts zero and no window is
/// the empty policy, which keeps everything. The compact text form (see [`FromStr`]) refuses
/// zeros, so a policy read from text never holds a rule that is on but keeps nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Keep the newest `keep_last` checkpoints.
    pub keep_last: u32,
    /// Keep every checkpoint created at most this long before the group's newest checkpoint.
    /// Serialized as a humantime string such as `"7days"`.
    #[serde(with = "humantime_window")]
    pub keep_within: Option<Duration>,
    /// Keep the newest checkpoint of each of the last `keep_hourly` UTC hours that have one.
    pub keep_hourly: u32,
    /// Keep the newest checkpoint of each of the last `keep_daily` UTC days that have one.
    pub keep_daily: u32,
    /// Keep the newest checkpoint of each of the last `keep_weekly` ISO weeks that have one.
    pub keep_weekly: u32,
    /// Keep the newest checkpoint of each of the last `keep_monthly` UTC months that have one.
    pub keep_monthly: u32,
    /// Keep the newest checkpoint of each of the last `keep_yearly` UTC years that have one.
    pub keep_yearly: u32,
}

impl Policy {
    /// True when no rule is set: such a policy keeps every checkpoint.
    pub fn is_empty(&self) -> bool {
        self.keep_within.is_none() && self.counts().iter().all(|&(_, count)| count == 0)
    }

    /// The count rules in canonical order, `within` excluded (it sits after `last`).
    fn counts(&self) -> [(&'static str, u32); 6] {
        [
            ("last", self.keep_last),
            ("hourly", self.keep_hourly),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
            ("yearly", self.keep_yearly),
        ]
    }

    /// The field behind a count rule's name, or `None` for a name that is no count rule.
    fn count_slot(&mut self, name: &str) -> Option<&mut u32> {
        match name {
            "last" => Some(&mut self.keep_last),
            "hourly" => Some(&mut self.keep_hourly),
            "daily" => Some(&mut self.keep_daily),
            "weekly" => Some(&mut self.keep_weekly),
            "monthly" => Some(&mut self.keep_monthly),
            "yearly" => Some(&mut self.keep_yearly),
            _ => None,
        }
    }

    /// Applies one `name=value` item of the compact form.
    fn apply_item(&mut self, item: &str) -> Result<(), PolicyError> {
        let Some((name, value)) = item.split_once('=') else {
            return Err(PolicyError::Malformed {
                item: item.to_owned(),
            });
        };
        let (name, value) = (name.trim(), value.trim());
        if name == "within" {
            let window = parse_window(item, value)?;
            return set_once(&mut self.keep_within, window, name);
        }
        let Some(slot) = self.count_slot(name) else {
            return Err(PolicyError::UnknownRule {
                item: item.to_owned(),
            });
        };
        let count = parse_count(item, value)?;
        // Zeros are refused before this point, so a non-zero slot was set by an earlier item.
        if *slot != 0 {
            return Err(PolicyError::Duplicate {
                rule: name.to_owned(),
            });
        }
        *slot = count;
        Ok(())
    }
}

/// Parses the compact form `last=10,within=7d,hourly=24,daily=7,weekly=4,monthly=12,yearly=3`.
///
/// Any subset in any order; `"none"` is the empty policy (blank text is refused, so a lost
/// argument never silently keeps everything). Each rule may appear once
/// and must be non-zero: to turn a rule off, leave it out.
impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let mut policy = Policy::default();
        if text.is_empty() {
            return Err(PolicyError::Empty);
        }
        if text == "none" {
            return Ok(policy);
        }
        for item in text.split(',') {
            policy.apply_item(item.trim())?;
        }
        Ok(policy)
    }
}

/// Writes the compact form in canonical order (`last`, `within`, then the calendar rules);
/// the empty policy is `none`. Rules that are off are left out.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = Vec::new();
        for (name, count) in self.counts() {
            if count != 0 {
                items.push(format!("{name}={count}"));
            }
            if let (Some(window), "last") = (self.keep_within, name) {
                items.push(format!("within={}", humantime::format_duration(window)));
            }
        }
        if items.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&items.join(","))
    }
}

/// Why the compact policy text was refused; every variant names the offending item or rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy item {item:?} is not of the form name=value")]
    Malformed { item: String },
    #[error(
        "policy item {item:?} names no known rule \
         (expected last, within, hourly, daily, weekly, monthly or yearly)"
    )]
    UnknownRule { item: String },
    #[error("policy rule {rule:?} is given more than once")]
    Duplicate { rule: String },
    #[error("policy item {item:?} needs a whole number")]
    NotANumber { item: String },
    #[error("policy item {item:?} is too large (at most {max})")]
    TooLarge { item: String, max: String },
    #[error("policy item {item:?} needs a duration such as 7d or 12h")]
    BadDuration { item: String },
    #[error("the policy is empty: give rules such as last=10, or \"none\" to keep everything")]
    Empty,
    #[error("policy item {item:?} would keep nothing; leave the rule out to turn it off")]
    Zero { item: String },
}

fn parse_count(item: &str, value: &str) -> Result<u32, PolicyError> {
    let count: u32 = value.parse().map_err(|e: std::num::ParseIntError| {
        let item = item.to_owned();
        match e.kind() {
            std::num::IntErrorKind::PosOverflow => PolicyError::TooLarge {
                item,
                max: u32::MAX.to_string(),
            },
            _ => PolicyError::NotANumber { item },
        }
    })?;
    if count == 0 {
        return Err(PolicyError::Zero {
            item: item.to_owned(),
        });
    }
    Ok(count)
}

fn parse_window(item: &str, value: &str) -> Result<Duration, PolicyError> {
    let too_large = || PolicyError::TooLarge {
        item: item.to_owned(),
        max: humantime::format_duration(MAX_WINDOW).to_string(),
    };
    let window = humantime::parse_duration(value).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => too_large(),
        _ => PolicyError::BadDuration {
            item: item.to_owned(),
        },
    })?;
    if window > MAX_WINDOW {
        return Err(too_large());
    }
    if window.is_zero() {
        return Err(PolicyError::Zero {
            item: item.to_owned(),
        });
    }
    Ok(window)
}

/// The longest `within` window: a century, beyond any history worth bounding by age (and
/// within what calendar arithmetic handles).
const MAX_WINDOW: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn set_once(slot: &mut Option<Duration>, window: Duration, rule: &str) -> Result<(), PolicyError> {
    if slot.is_some() {
        return Err(PolicyError::Duplicate {
            rule: rule.to_owned(),
        });
    }
    *slot = Some(window);
    Ok(())
}

/// Serde for `Policy::keep_within`: a humantime string, so config files read `"7days"`.
mod humantime_window {
    use std::time::Duration;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        window: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match window {
            Some(window) => {
                let text = humantime::format_duration(*window).to_string();
                serializer.serialize_some(&text)
            }
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(D::Error::custom)
    }
}
