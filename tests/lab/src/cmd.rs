//! Running external tools (`ip`, `iptables-restore`, ...) with errors that say what failed and,
//! when the tool is missing, which Debian package provides it.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::process::{Command, ExitStatus, Output, Stdio};

/// Failure to run an external command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program is not installed (or not on `PATH`).
    #[error("{program} not found: {hint}")]
    NotFound { program: String, hint: String },
    /// The program exists but could not be started, or its input/output failed.
    #[error("could not run `{command}`: {source}")]
    Io {
        command: String,
        #[source]
        source: io::Error,
    },
    /// The program ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

impl CommandError {
    /// The `stderr` of a command that ran and failed, empty for the other variants.
    #[must_use]
    pub fn stderr(&self) -> &str {
        match self {
            Self::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }
}

/// The Debian package that ships `program`, for "not found" hints.
#[must_use]
pub fn package_for(program: &str) -> Option<&'static str> {
    let base = program.rsplit('/').next().unwrap_or(program);
    let package = match base {
        "ip" | "bridge" | "tc" | "ss" => "iproute2",
        p if p.starts_with("iptables")
            || p.starts_with("ip6tables")
            || p.starts_with("xtables") =>
        {
            "iptables"
        }
        "nft" => "nftables",
        "sysctl" | "ps" | "pkill" | "pgrep" => "procps",
        "bpftool" => "bpftool",
        "iperf3" => "iperf3",
        "wrk" => "wrk",
        "hey" => "hey",
        "arping" => "arping",
        "ndisc6" | "rdisc6" => "ndisc6",
        "socat" => "socat",
        "nc" => "netcat-openbsd",
        "curl" => "curl",
        "conntrack" => "conntrack",
        _ => return None,
    };
    Some(package)
}

fn not_found(program: &str) -> CommandError {
    let hint = match package_for(program) {
        Some(package) => format!("apt-get install {package}"),
        None => format!("install the package that provides {program}"),
    };
    CommandError::NotFound {
        program: program.to_owned(),
        hint,
    }
}

/// `program arg1 arg2 ...` for messages.
#[must_use]
pub fn describe(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&arg.to_string_lossy());
    }
    out
}

/// Maps a spawn error to [`CommandError`], recognising a missing program.
#[must_use]
pub fn spawn_error(cmd: &Command, source: io::Error) -> CommandError {
    if source.kind() == io::ErrorKind::NotFound {
        not_found(&cmd.get_program().to_string_lossy())
    } else {
        CommandError::Io {
            command: describe(cmd),
            source,
        }
    }
}

fn check(cmd: &Command, output: Output) -> Result<Output, CommandError> {
    if output.status.success() {
        Ok(output)
    } else {
        Err(CommandError::Failed {
            command: describe(cmd),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Runs `cmd` to completion with stdin closed; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<Output, CommandError> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(cmd, e))?;
    check(cmd, output)
}

/// Runs `cmd` with `input` on its stdin; fails unless it exits 0.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Result<Output, CommandError> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(cmd, e))?;
    let io_err = |source| CommandError::Io {
        command: describe(cmd),
        source,
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let written = std::thread::scope(|scope| {
        let writer = scope.spawn(move || stdin.write_all(input));
        let output = child.wait_with_output();
        (writer.join(), output)
    });
    let output = written.1.map_err(io_err)?;
    // A writer error (EPIPE) only matters if the program also failed, which `check` reports.
    let _ = written.0;
    check(cmd, output)
}

/// Runs `program args...` and returns its stdout as a string.
pub fn stdout_of<I, S>(program: &str, args: I) -> Result<String, CommandError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = run(Command::new(program).args(args))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_the_package() {
        let err = run(&mut Command::new("ip-definitely-missing-tool")).unwrap_err();
        assert!(matches!(err, CommandError::NotFound { .. }));
        let mut cmd = Command::new("/nonexistent/iptables-restore");
        let err = run(&mut cmd).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/nonexistent/iptables-restore not found: apt-get install iptables"
        );
        assert_eq!(package_for("ip"), Some("iproute2"));
        assert_eq!(package_for("ip6tables-legacy-restore"), Some("iptables"));
        assert_eq!(package_for("whatever"), None);
    }

    #[test]
    fn failure_reports_command_and_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("`sh -c echo boom >&2; exit 3` failed"),
            "{text}"
        );
        assert!(text.ends_with("boom"), "{text}");
        assert_eq!(err.stderr(), "boom");
    }

    #[test]
    fn input_reaches_stdin() {
        let out = run_with_input(&mut Command::new("cat"), b"hello").unwrap();
        assert_eq!(out.stdout, b"hello");
        assert_eq!(stdout_of("echo", ["a", "b"]).unwrap(), "a b\n");
    }
}

/// Where one `ferrite agent` keeps its pinned datapath, cgroup hooks, API socket and state:
/// every lab runs each agent on its own set so agents never share kernel objects.
#[derive(Clone, Copy, Debug)]
pub struct AgentPaths<'a> {
    pub bpf_root: &'a std::path::Path,
    pub cgroup: &'a std::path::Path,
    pub api_socket: &'a std::path::Path,
    pub state_dir: &'a std::path::Path,
}

/// `ferrite agent --source SOURCE` on `paths`; callers add node name, devices, flags and stdio.
#[must_use]
pub fn agent_command(ferrite: &OsStr, source: &OsStr, paths: AgentPaths<'_>) -> Command {
    let mut command = Command::new(ferrite);
    command
        .arg("agent")
        .arg("--source")
        .arg(source)
        .arg("--bpf-root")
        .arg(paths.bpf_root)
        .arg("--cgroup")
        .arg(paths.cgroup)
        .arg("--api-socket")
        .arg(paths.api_socket)
        .arg("--state-dir")
        .arg(paths.state_dir);
    command
}
