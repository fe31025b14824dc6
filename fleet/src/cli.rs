//! The command line, parsed into checked values before anything is called.

use crate::csr::Csr;
use sensor_model::domain::group_id::GroupId;
use sensor_model::domain::thing_name::ThingName;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: fleet [--region R] [--endpoint URL] <command>

  enroll --csr FILE --thing NAME --group GROUPID --policy POLICY [--cert-out FILE]
        create box NAME in group GROUPID from the CSR its `sensorbox enroll` wrote: the
        thing with its groupid attribute, the certificate from the CSR (the key never
        leaves the box), the box policy (stack output SensorBoxPolicyName) on it, the
        certificate attached to the thing exclusively. Writes the certificate to FILE
        (default NAME.cert.pem) and prints the box's config lines.
  move NAME GROUPID
        change box NAME's group; the functions see it within their cache TTL (60 s).
  list  every box: group, certificate status, connected, last change.
  revoke NAME
        mark box NAME's certificate REVOKED and detach it from the thing: refused on MQTT
        connect, by the credentials provider and so on HTTPS; every other box keeps working.

The registry is AWS IoT in the SDK's region with the SDK's default credentials, or
--endpoint / AWS_ENDPOINT_URL_IOT (the local stack's: http://127.0.0.1:5010).
";

/// Where the registry is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub region: Option<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug)]
pub struct EnrollArgs {
    pub csr: Csr,
    pub thing: ThingName,
    pub group: GroupId,
    pub policy: String,
    pub cert_out: PathBuf,
}

#[derive(Debug)]
pub struct MoveArgs {
    pub thing: ThingName,
    pub group: GroupId,
}

#[derive(Debug)]
pub struct RevokeArgs {
    pub thing: ThingName,
}

#[derive(Debug)]
pub enum Command {
    Enroll(EnrollArgs, Options),
    Move(MoveArgs, Options),
    List(Options),
    Revoke(RevokeArgs, Options),
}

impl Command {
    pub fn options(&self) -> &Options {
        match self {
            Command::Enroll(_, o)
            | Command::Move(_, o)
            | Command::List(o)
            | Command::Revoke(_, o) => o,
        }
    }
}

fn thing(text: &str) -> Result<ThingName, String> {
    ThingName::parse(text).map_err(|e| format!("box name {text:?} {}", e.message()))
}

fn group(text: &str) -> Result<GroupId, String> {
    GroupId::parse(text).map_err(|e| format!("groupid {text:?} {}", e.message()))
}

/// The command, or `None` after printing the usage for `--help`.
pub fn parse(args: &[String]) -> Result<Option<Command>, String> {
    let mut options = Options::default();
    let mut rest: Vec<&str> = Vec::new();
    let mut flags: Vec<(&str, &str)> = Vec::new();
    let mut it = args.iter().map(String::as_str);
    while let Some(arg) = it.next() {
        match arg {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            flag if flag.starts_with("--") => {
                let value = it
                    .next()
                    .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
                match flag {
                    "--region" => options.region = Some(value.to_string()),
                    "--endpoint" => options.endpoint = Some(value.to_string()),
                    _ => flags.push((flag, value)),
                }
            }
            word => rest.push(word),
        }
    }
    let flag = |name: &str| flags.iter().find(|(f, _)| *f == name).map(|(_, v)| *v);
    let allow_flags = |allowed: &[&str]| -> Result<(), String> {
        match flags.iter().find(|(f, _)| !allowed.contains(f)) {
            Some((f, _)) => Err(format!("unknown option {f}\n{USAGE}")),
            None => Ok(()),
        }
    };
    let command = match rest.as_slice() {
        ["enroll"] => {
            allow_flags(&["--csr", "--thing", "--group", "--policy", "--cert-out"])?;
            let need =
                |name: &str| flag(name).ok_or_else(|| format!("enroll needs {name}\n{USAGE}"));
            let thing = thing(need("--thing")?)?;
            let csr_path = PathBuf::from(need("--csr")?);
            let csr = Csr::read(&csr_path)?;
            let policy = need("--policy")?.to_string();
            if policy.is_empty()
                || !policy
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c))
            {
                return Err(format!("policy name {policy:?} is not an IoT policy name"));
            }
            let cert_out = flag("--cert-out")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("{thing}.cert.pem")));
            Command::Enroll(
                EnrollArgs {
                    csr,
                    group: group(need("--group")?)?,
                    thing,
                    policy,
                    cert_out,
                },
                options,
            )
        }
        ["move", name, groupid] => {
            allow_flags(&[])?;
            Command::Move(
                MoveArgs {
                    thing: thing(name)?,
                    group: group(groupid)?,
                },
                options,
            )
        }
        ["list"] => {
            allow_flags(&[])?;
            Command::List(options)
        }
        ["revoke", name] => {
            allow_flags(&[])?;
            Command::Revoke(
                RevokeArgs {
                    thing: thing(name)?,
                },
                options,
            )
        }
        [] => return Err(format!("no command\n{USAGE}")),
        other => return Err(format!("unknown command {:?}\n{USAGE}", other.join(" "))),
    };
    Ok(Some(command))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn commands_parse_into_checked_values() {
        match parse(&args("--endpoint http://127.0.0.1:5010 move pi-19 site-8")) {
            Ok(Some(Command::Move(m, o))) => {
                assert_eq!((m.thing.as_str(), m.group.as_str()), ("pi-19", "site-8"));
                assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:5010"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&args("list")), Ok(Some(Command::List(_)))));
        assert!(matches!(
            parse(&args("revoke pi-19")),
            Ok(Some(Command::Revoke(..)))
        ));
    }

    #[test]
    fn bad_input_is_refused_before_any_call() {
        for (line, says) in [
            ("move pi-19 a/b", "groupid \"a/b\""),
            ("move pi/19 site", "box name \"pi/19\""),
            ("revoke", "unknown command"),
            ("list --csr x", "unknown option --csr"),
            (
                "enroll --thing pi --group g --policy p",
                "enroll needs --csr",
            ),
            (
                "enroll --thing pi --group g --policy p --csr /nonexistent.csr",
                "/nonexistent.csr",
            ),
            ("", "no command"),
        ] {
            let e = parse(&args(line)).expect_err(line);
            assert!(e.contains(says), "{line}: {e}");
        }
    }
}
