//! [`Child`]: a spawned process that is killed (`SIGKILL`) and reaped when the guard drops.

use std::io::{self, Read};
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use crate::cmd::{self, CommandError};

/// Failure while supervising a spawned process.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("{what} (pid {pid}): {source}")]
    Io {
        what: &'static str,
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` (pid {pid}) still running after {after:?}; killed")]
    Timeout {
        command: String,
        pid: u32,
        after: Duration,
    },
}

/// A running process that is killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Child {
    inner: std::process::Child,
    command: String,
    reaped: bool,
}

impl Child {
    /// Spawns `cmd` (configure stdio, netns and cgroup on it first).
    pub fn spawn(cmd: &mut Command) -> Result<Self, CommandError> {
        let inner = cmd.spawn().map_err(|e| cmd::spawn_error(cmd, e))?;
        Ok(Self {
            inner,
            command: cmd::describe(cmd),
            reaped: false,
        })
    }

    /// The process id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    /// The command line it was started with, for messages.
    #[must_use]
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The underlying `std` child, e.g. to take its piped stdout.
    pub fn inner_mut(&mut self) -> &mut std::process::Child {
        &mut self.inner
    }

    fn io(&self, what: &'static str) -> impl FnOnce(io::Error) -> ChildError {
        let pid = self.id();
        move |source| ChildError::Io { what, pid, source }
    }

    /// The exit status if it has exited (and reaps it), `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, ChildError> {
        let status = self.inner.try_wait().map_err(self.io("waitpid"))?;
        if status.is_some() {
            self.reaped = true;
        }
        Ok(status)
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, ChildError> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) unless it was already reaped.
    pub fn signal(&self, signal: i32) -> Result<(), ChildError> {
        if self.reaped {
            return Ok(());
        }
        let pid = i32::try_from(self.id()).expect("pids fit in i32");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
        if unsafe { libc::kill(pid, signal) } == 0 {
            Ok(())
        } else {
            Err(self.io("kill")(io::Error::last_os_error()))
        }
    }

    /// SIGKILLs and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus, ChildError> {
        self.signal(libc::SIGKILL)?;
        let status = self.inner.wait().map_err(self.io("waitpid"))?;
        self.reaped = true;
        Ok(status)
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus, ChildError> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.signal(libc::SIGTERM)?;
        match self.wait_timeout(grace)? {
            Some(status) => Ok(status),
            None => self.kill(),
        }
    }

    /// Collects piped stdout/stderr until it exits; kills it after `timeout`.
    /// Streams not configured as `Stdio::piped()` come back empty.
    pub fn output_within(mut self, timeout: Duration) -> Result<Output, ChildError> {
        let stdout = self.inner.stdout.take();
        let stderr = self.inner.stderr.take();
        let (status, stdout, stderr) = std::thread::scope(|scope| {
            let out = scope.spawn(move || read_all(stdout));
            let err = scope.spawn(move || read_all(stderr));
            let status = match self.wait_timeout(timeout) {
                Ok(Some(status)) => Ok(status),
                Ok(None) => {
                    // Killing closes the pipes, which lets the reader threads finish.
                    let _ = self.kill();
                    Err(ChildError::Timeout {
                        command: self.command.clone(),
                        pid: self.id(),
                        after: timeout,
                    })
                }
                Err(e) => Err(e),
            };
            let stdout = out.join().unwrap_or_default();
            let stderr = err.join().unwrap_or_default();
            (status, stdout, stderr)
        });
        Ok(Output {
            status: status?,
            stdout,
            stderr,
        })
    }
}

fn read_all(stream: Option<impl Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut stream) = stream {
        // A read error just truncates what we captured; the exit status tells the story.
        let _ = stream.read_to_end(&mut buf);
    }
    buf
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // kill() fails only if it already exited, which the wait below then reaps.
        let _ = self.inner.kill();
        if let Err(e) = self.inner.wait() {
            crate::report_drop_failure(&format!("child {} ({})", self.id(), self.command), &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn drop_kills_and_reaps() {
        let child = Child::spawn(Command::new("sleep").arg("30")).unwrap();
        let pid = child.id();
        drop(child);
        // Reaped: the pid is gone, or reused by a process that is not our child.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(!status.contains(&format!("PPid:\t{}\n", std::process::id())));
    }

    #[test]
    fn stop_and_wait() {
        let mut child = Child::spawn(Command::new("sleep").arg("30")).unwrap();
        assert!(child.try_wait().unwrap().is_none());
        assert!(
            child
                .wait_timeout(Duration::from_millis(20))
                .unwrap()
                .is_none()
        );
        let status = child.stop(Duration::from_secs(2)).unwrap();
        assert!(!status.success());
        // Signalling a reaped child is a no-op rather than hitting a reused pid.
        child.signal(libc::SIGKILL).unwrap();
    }

    #[test]
    fn output_is_collected_and_timeouts_kill() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = Child::spawn(&mut cmd)
            .unwrap()
            .output_within(Duration::from_secs(5))
            .unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert!(out.status.success());

        let mut cmd = Command::new("sleep");
        cmd.arg("30").stdout(Stdio::piped());
        let err = Child::spawn(&mut cmd)
            .unwrap()
            .output_within(Duration::from_millis(100))
            .unwrap_err();
        assert!(matches!(err, ChildError::Timeout { .. }), "{err}");
    }
}
