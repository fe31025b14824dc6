//! The document indexed per reading: the reading as received (strings kept, so the
//! website's queries keep working) plus `date`, `@timestamp`, `sensor`, `location` and
//! `warnings`, under a deterministic id.

use crate::domain::arrival::Arrival;
use crate::domain::measure::Measure;
use crate::domain::reading::Reading;
use crate::index_name::IndexName;
use chrono::SecondsFormat;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// A document ready for the `create` op.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub index: String,
    pub id: DocId,
    pub body: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DocId(String);

impl DocId {
    /// Same reading, same id: sensor, groupid, and each measure's sensorid and
    /// createdtime, as received. Retries and duplicate POSTs collide on purpose.
    pub fn of(reading: &Reading) -> DocId {
        let mut hash = Sha256::new();
        // Length-prefixed fields, so no two different readings can build the same input.
        let mut field = |s: &str| {
            hash.update((s.len() as u64).to_le_bytes());
            hash.update(s.as_bytes());
        };
        field(reading.sensor().name());
        field(reading.group().as_str());
        for m in reading.measures() {
            field(m.measure().name());
            field(m.sensor_id().as_str());
            field(m.created().as_str());
        }
        let digest = hash.finalize();
        let mut id = String::with_capacity(32);
        for byte in &digest[..16] {
            id.push(char::from(HEX[usize::from(byte >> 4)]));
            id.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        DocId(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// How `date` (the receive time, UTC) is written; the index templates map it as
/// `yyyy-MM-dd HH:mm:ss`, and every range on `date` is written the same way.
pub const RECEIVED_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

impl Document {
    /// The bytes this document takes in a `_bulk` body: the `create` action line and the
    /// source line, each with its newline (as `sensor_aws::opensearch::bulk_body` writes
    /// them), so a batch can be split into size-bounded bulks before it is serialized.
    pub fn bulk_bytes(&self) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        // `{"create":{"_index":"<index>","_id":"<id>"}}`: names and ids hold no character
        // JSON escapes (index names and hex ids are checked), so the length is exact.
        let action = r#"{"create":{"_index":"","_id":""}}"#.len()
            + self.index.len()
            + self.id.as_str().len();
        // Writing into a counter cannot fail.
        let _ = serde_json::to_writer(&mut count, &self.body);
        action + 1 + count.0 + 1
    }

    /// `date` is when the function got the request (as the original added); `@timestamp`
    /// the reading's effective time (its `createdtime`, never later than its arrival plus
    /// the tolerance: [`Arrival::effective`]), so a clock that ran ahead cannot date a
    /// document in the future, pin a box's "latest" or hide it from a time range.
    pub fn build(
        reading: &Reading,
        index: &IndexName,
        warnings: &[Measure],
        arrival: Arrival,
    ) -> Document {
        let mut body = reading.raw().clone();
        let taken = reading.taken_at().utc();
        body.insert(
            "date".into(),
            Value::String(arrival.received().format(RECEIVED_FORMAT).to_string()),
        );
        body.insert(
            "@timestamp".into(),
            Value::String(
                arrival
                    .effective(taken)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, true),
            ),
        );
        body.insert("sensor".into(), Value::from(reading.sensor().name()));
        if let Some(location) = reading.location() {
            body.insert(
                "location".into(),
                json!({"lat": location.lat(), "lon": location.lon()}),
            );
        }
        let mut names: Vec<&str> = warnings.iter().map(|m| m.name()).collect();
        names.dedup();
        body.insert("warnings".into(), json!(names));
        Document {
            // The box's own time, as before: a resend lands in the same index whenever it
            // arrives, so the `create` op still stores it once.
            index: index.for_time(taken),
            id: DocId::of(reading),
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::arrival::AheadTolerance;
    use crate::domain::reading::tests::SEED;
    use crate::domain::sensor::Sensor;
    use chrono::{TimeZone, Utc};
    use chrono_tz::Tz;

    fn seed() -> Reading {
        Reading::parse(
            Sensor::Gasdetector,
            serde_json::from_str(SEED).unwrap(),
            Tz::UTC,
        )
        .unwrap()
    }

    fn received() -> Arrival {
        let at = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 1).unwrap();
        Arrival::new(at, AheadTolerance::default())
    }

    #[test]
    fn document_has_the_reading_and_the_added_fields() {
        let index = IndexName::parse("gasdetect").unwrap();
        let doc = Document::build(&seed(), &index, &[Measure::No2], received());
        assert_eq!(doc.index, "gasdetect");
        let b = &doc.body;
        assert_eq!(b["groupid"], "2");
        assert_eq!(b["no2"]["value"], "52.00", "strings kept as received");
        assert_eq!(b["gps"], "37.61002501514269, 126.99636868892937");
        assert_eq!(b["date"], "2026-11-26 12:00:01");
        assert_eq!(b["@timestamp"], "2021-09-03T18:14:49Z");
        assert_eq!(b["sensor"], "gasdetector");
        assert_eq!(
            b["location"],
            json!({"lat": 37.61002501514269, "lon": 126.99636868892937})
        );
        assert_eq!(b["warnings"], json!(["no2"]));
    }

    #[test]
    fn bulk_bytes_is_the_length_of_the_two_bulk_lines() {
        let index = IndexName::parse("gasdetect-%Y.%m").unwrap();
        let doc = Document::build(&seed(), &index, &[Measure::No2], received());
        let action = json!({"create": {"_index": doc.index, "_id": doc.id.as_str()}});
        let lines = format!("{action}\n{}\n", Value::Object(doc.body.clone()));
        assert_eq!(doc.bulk_bytes(), lines.len());
    }

    #[test]
    fn dated_indices_use_the_reading_time() {
        let index = IndexName::parse("gasdetect-%Y.%m").unwrap();
        let doc = Document::build(&seed(), &index, &[], received());
        assert_eq!(doc.index, "gasdetect-2021.09");
        assert_eq!(doc.body["warnings"], json!([]));
    }

    #[test]
    fn a_reading_dated_after_its_arrival_is_timestamped_at_its_arrival() {
        let index = IndexName::parse("gasdetect-%Y.%m").unwrap();
        let future = SEED.replace("2021-09-03 18:14:49", "9999-12-31 23:59:59");
        let reading = Reading::parse(
            Sensor::Gasdetector,
            serde_json::from_str(&future).unwrap(),
            Tz::UTC,
        )
        .unwrap();
        let doc = Document::build(&reading, &index, &[], received());
        assert_eq!(
            doc.body["@timestamp"], "2026-11-26T12:00:03Z",
            "arrival + 2 s"
        );
        assert_eq!(
            doc.body["no2"]["createdtime"], "9999-12-31 23:59:59",
            "kept as sent"
        );
        assert_eq!(
            doc.index, "gasdetect-9999.12",
            "a resend lands where the first did"
        );
        assert_eq!(doc.id, DocId::of(&reading));
    }

    #[test]
    fn id_is_stable_and_ignores_values() {
        let a = DocId::of(&seed());
        assert_eq!(a, DocId::of(&seed()));
        assert_eq!(a.as_str().len(), 32);
        // Same measure ids and times, different value: a resend of the same reading.
        let resent = SEED.replace("\"52.00\"", "\"53.00\"");
        let b = Reading::parse(
            Sensor::Gasdetector,
            serde_json::from_str(&resent).unwrap(),
            Tz::UTC,
        )
        .unwrap();
        assert_eq!(a, DocId::of(&b));
        // The value pinned here guards against accidental changes of the id scheme,
        // which would duplicate every document resent after an upgrade.
        assert_eq!(a.as_str(), "bd3a6762415cbcc6f5df566c5e1dfcf9");
    }

    #[test]
    fn id_changes_with_group_time_sensor_id() {
        let base = DocId::of(&seed());
        for (from, to) in [
            ("\"groupid\": \"2\"", "\"groupid\": \"3\""),
            ("\"sensorid\": \"0006\"", "\"sensorid\": \"0016\""),
            (
                "\"value\": \"400\",   \"createdtime\": \"2021-09-03 18:14:49\"",
                "\"value\": \"400\", \"createdtime\": \"2021-09-03 18:14:50\"",
            ),
        ] {
            let changed = SEED.replace(from, to);
            assert_ne!(changed, SEED, "{from}");
            let r = Reading::parse(
                Sensor::Gasdetector,
                serde_json::from_str(&changed).unwrap(),
                Tz::UTC,
            )
            .unwrap();
            assert_ne!(DocId::of(&r), base, "{from}");
        }
    }
}
