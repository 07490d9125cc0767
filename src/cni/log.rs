//! Logging of the plugin process: stderr (warnings and errors; the runtime keeps them) and,
//! when the config names `logFile`, that file at `logLevel` (default `info`). `FERRITE_LOG`
//! overrides both filters.

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::config::NetConf;

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env("FERRITE_LOG").unwrap_or_else(|_| EnvFilter::new(default))
}

/// Installs the global subscriber (once per process).
pub fn init(conf: Option<&NetConf>) {
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_filter(filter("warn"));
    let file = conf.and_then(|c| {
        let path = c.log_file.as_ref()?;
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()?;
        let level = c.log_level.as_deref().unwrap_or("info");
        Some(
            tracing_subscriber::fmt::layer()
                .with_writer(Mutex::new(f))
                .with_ansi(false)
                .with_filter(filter(level)),
        )
    });
    let subscriber = tracing_subscriber::registry().with(stderr).with(file);
    let _ = tracing::subscriber::set_global_default(subscriber);
}
