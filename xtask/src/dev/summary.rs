//! The "local stack ready" summary of `cargo xtask dev`: every endpoint, and commands to
//! try it with, using sample requests from `events/gasdetector/` when there are some.

use super::options::Options;
use super::{HOST, ROLE_ALIAS};
use crate::tools::root;
use std::path::{Path, PathBuf};

/// Prints the endpoints and the "try it" commands; `invoke_flag` is added to the
/// `cargo lambda invoke` line.
pub fn print(options: &Options, opensearch_url: &str, invoke_flag: &str) {
    let ports = &options.ports;
    let sample = sample_body();
    let curl_body = match &sample {
        Some(path) => format!("--data-binary @{}", path.display()),
        None => format!("--data-binary '{SEED}'"),
    };
    let invoke = sample_event()
        .map(|path| {
            let port = if ports.watch == 9000 {
                String::new()
            } else {
                format!(" --invoke-port {}", ports.watch)
            };
            format!(
                "  cargo lambda invoke gasdetector{invoke_flag}{port} --data-file {}\n",
                path.display()
            )
        })
        .unwrap_or_default();
    println!(
        "\n\
http://{HOST}:{gw}/   the fleet page (boxes, positions, charts, warnings)

local stack ready (Ctrl-C stops everything)
  page           http://{HOST}:{gw}/   read API: /api/boxes /api/readings /api/warnings /api/rules
  gateway        http://{HOST}:{gw}/gasdetector  /dust  /temp  {legacy}
                 http://{HOST}:{gw}/things/<thing>/gasdetector  /dust  /temp   (SigV4, a box's own thing only)
  credentials    https://localhost:{credentials}/role-aliases/{ROLE_ALIAS}/credentials   (IoT credentials provider: box certificate + x-amzn-iot-thingname)
  functions      http://{HOST}:{watch}/2015-03-31/functions/<gasdetector|dust|temp|query>/invocations
  IoT endpoint   http://{HOST}:{iot}   (AWS_ENDPOINT_URL_IOT_DATA_PLANE)
  MQTT broker    mqtt://{HOST}:{mqtt}   mqtts://localhost:{mqtts} (client certificate from target/dev/certs)
  OpenSearch     {opensearch_url}
  IoT registry   http://{HOST}:{registry}   (moto; AWS_ENDPOINT_URL_IOT: which group each box may write)
{stream}  logs           target/dev/

try it:
  mosquitto_sub -h {HOST} -p {mqtt} -t 'pi/#' -q 1 -v
{curl}{invoke}  curl -sS '{opensearch_url}/gasdetect/_search?q=groupid:2&pretty'
  cargo xtask stats      (sums the functions' EMF metrics from target/dev/functions.log)
",
        gw = ports.gateway,
        watch = ports.watch,
        iot = ports.iot,
        mqtt = ports.mqtt,
        mqtts = ports.mqtts,
        registry = ports.registry,
        credentials = ports.credentials,
        stream = if options.stream {
            format!(
                "  stream         Kinesis http://{HOST}:{kinesis} (ferrokinesis, stream `sensor-readings`) fed by the rule on\n                 \
                 $aws/rules/sensorbox_readings/devices/<thing>/data/<sensor>/<groupid>; event source mappings\n                 \
                 invoke the functions with Kinesis batches (up to 1,000 records, 1 s window)\n",
                kinesis = ports.kinesis
            )
        } else {
            String::new()
        },
        legacy = if options.as_deployed {
            "(shared-key routes: refused, --as-deployed)"
        } else {
            "(shared-key routes: open locally; deployed stacks refuse them)"
        },
        curl = if options.as_deployed {
            format!("  curl -sS -X POST http://{HOST}:{gw}/gasdetector -H 'content-type: application/json' {curl_body}   (403 forbidden: --as-deployed)\n", gw = ports.gateway)
        } else {
            format!("  curl -sS -X POST http://{HOST}:{gw}/gasdetector -H 'content-type: application/json' {curl_body}\n", gw = ports.gateway)
        },
    );
}

/// The design's seed reading with no2 above the default threshold, for the curl line when
/// `events/` has no plain body sample.
const SEED: &str = r#"{"groupid": "2", "gps": "37.61002501514269, 126.99636868892937", "co": {"sensorid": "0005", "sensortype": "8", "value": "26.20", "createdtime": "2021-09-03 18:14:49"}, "no2": {"sensorid": "0006", "sensortype": "9", "value": "95.00", "createdtime": "2021-09-03 18:14:49"}}"#;

/// A plain request body under `events/gasdetector/` (a reading, not an envelope),
/// preferably one that trips the no2 rule.
fn sample_body() -> Option<PathBuf> {
    let files = sample_files();
    let plain =
        |text: &str| serde_free_has_key(text, "groupid") && !serde_free_has_key(text, "httpMethod");
    let named = |path: &Path, part: &str| path.to_string_lossy().contains(part);
    files
        .iter()
        .find(|(path, text)| plain(text) && named(path, "warn-no2"))
        .or_else(|| {
            files
                .iter()
                .find(|(path, text)| plain(text) && !named(path, "batch"))
        })
        .or_else(|| files.iter().find(|(_, text)| plain(text)))
        .map(|(path, _)| path.clone())
}

/// An API Gateway REST event under `events/gasdetector/` for `cargo lambda invoke`.
fn sample_event() -> Option<PathBuf> {
    let files = sample_files();
    files
        .iter()
        .find(|(path, text)| {
            serde_free_has_key(text, "httpMethod")
                && path.to_string_lossy().contains("warn-no2-apigw-rest")
        })
        .or_else(|| {
            files
                .iter()
                .find(|(_, text)| serde_free_has_key(text, "httpMethod"))
        })
        .map(|(path, _)| path.clone())
}

fn sample_files() -> Vec<(PathBuf, String)> {
    let dir = Path::new("events").join("gasdetector");
    let Ok(entries) = std::fs::read_dir(root().join(&dir)) else {
        return Vec::new();
    };
    let mut files: Vec<(PathBuf, String)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            Some((dir.join(p.file_name()?), text))
        })
        .collect();
    files.sort();
    files
}

fn serde_free_has_key(text: &str, key: &str) -> bool {
    text.contains(&format!("\"{key}\""))
}
