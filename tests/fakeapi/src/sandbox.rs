//! A fake API server in a scratch directory of its own (for its kubeconfigs), both gone on drop:
//! the setup every test of the kube source starts with.

use std::{
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{FakeApi, FakeApiError, Options};

/// A running [`FakeApi`] and its directory under the system temp dir.
pub struct Sandbox {
    api: FakeApi,
    dir: PathBuf,
}

impl Sandbox {
    /// Starts a server with default options in a fresh `fakeapi-NAME-PID-N` directory.
    pub fn start(name: &str) -> Result<Self, FakeApiError> {
        Self::start_with(name, &Options::default())
    }

    pub fn start_with(name: &str, options: &Options) -> Result<Self, FakeApiError> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fakeapi-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| FakeApiError::Kubeconfig {
            path: dir.clone(),
            source,
        })?;
        match FakeApi::start_with(&dir, options) {
            Ok(api) => Ok(Self { api, dir }),
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(error)
            }
        }
    }

    /// The directory holding the kubeconfigs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Deref for Sandbox {
    type Target = FakeApi;

    fn deref(&self) -> &FakeApi {
        &self.api
    }
}

impl DerefMut for Sandbox {
    fn deref_mut(&mut self) -> &mut FakeApi {
        &mut self.api
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.api.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
