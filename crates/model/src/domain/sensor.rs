//! The three sensor kinds, one per route and Lambda function, and the measures each carries.

use crate::domain::measure::Measure;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sensor {
    Gasdetector,
    Dust,
    Temp,
}

impl Sensor {
    pub const ALL: [Sensor; 3] = [Sensor::Gasdetector, Sensor::Dust, Sensor::Temp];

    /// Route and function name (`/gasdetector`, `gasdetector`).
    pub fn name(self) -> &'static str {
        match self {
            Sensor::Gasdetector => "gasdetector",
            Sensor::Dust => "dust",
            Sensor::Temp => "temp",
        }
    }

    pub fn parse(name: &str) -> Option<Sensor> {
        Sensor::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The measures a reading on this route may carry, in document order.
    pub fn measures(self) -> &'static [Measure] {
        match self {
            Sensor::Gasdetector => &[Measure::Co, Measure::No2, Measure::C2h5oh, Measure::H2],
            Sensor::Dust => &[Measure::Pm1, Measure::Pm25, Measure::Pm10],
            Sensor::Temp => &[Measure::Temperature, Measure::Humidity],
        }
    }

    /// Index used when `INDEX` is not set (the seed deployment's names).
    pub fn default_index(self) -> &'static str {
        match self {
            Sensor::Gasdetector => "gasdetect",
            Sensor::Dust => "dust",
            Sensor::Temp => "temp",
        }
    }

    pub fn measure_named(self, name: &str) -> Option<Measure> {
        self.measures().iter().copied().find(|m| m.name() == name)
    }
}

impl fmt::Display for Sensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_sets_match_the_design() {
        let names = |s: Sensor| s.measures().iter().map(|m| m.name()).collect::<Vec<_>>();
        assert_eq!(names(Sensor::Gasdetector), ["co", "no2", "c2h5oh", "h2"]);
        assert_eq!(names(Sensor::Dust), ["pm1", "pm25", "pm10"]);
        assert_eq!(names(Sensor::Temp), ["temperature", "humidity"]);
    }

    #[test]
    fn names_round_trip() {
        for sensor in Sensor::ALL {
            assert_eq!(Sensor::parse(sensor.name()), Some(sensor));
        }
        assert_eq!(Sensor::parse("Dust"), None);
    }

    #[test]
    fn a_measure_belongs_to_one_route_only() {
        assert_eq!(Sensor::Dust.measure_named("no2"), None);
        assert_eq!(Sensor::Gasdetector.measure_named("no2"), Some(Measure::No2));
    }
}
