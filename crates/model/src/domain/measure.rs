//! Measure names as they appear in payloads, rules and warnings.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    Co,
    No2,
    C2h5oh,
    H2,
    Pm1,
    Pm25,
    Pm10,
    Temperature,
    Humidity,
}

impl Measure {
    pub const ALL: [Measure; 9] = [
        Measure::Co,
        Measure::No2,
        Measure::C2h5oh,
        Measure::H2,
        Measure::Pm1,
        Measure::Pm25,
        Measure::Pm10,
        Measure::Temperature,
        Measure::Humidity,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Measure::Co => "co",
            Measure::No2 => "no2",
            Measure::C2h5oh => "c2h5oh",
            Measure::H2 => "h2",
            Measure::Pm1 => "pm1",
            Measure::Pm25 => "pm25",
            Measure::Pm10 => "pm10",
            Measure::Temperature => "temperature",
            Measure::Humidity => "humidity",
        }
    }

    pub fn parse(name: &str) -> Option<Measure> {
        Measure::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back() {
        for m in Measure::ALL {
            assert_eq!(Measure::parse(m.name()), Some(m));
        }
        assert_eq!(Measure::parse("n02"), None);
        assert_eq!(Measure::parse("NO2"), None);
    }
}
