//! The `sizes` section: what a user downloads. The static binaries per architecture (as built
//! and stripped again, to show nothing is left to strip) against the 12 MB budget and the 8 MB
//! aim, and the image per architecture as a registry pull transfers it (the compressed layers
//! of the OCI index `make package` wrote) and as the airgap tarball k3s imports.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use super::results::Cell;

/// DESIGN.md: a static binary is at most 12 MB, aim 8 MB (MB = 10^6 bytes, as `ls -l` users read it).
pub const BUDGET_BYTES: u64 = 12_000_000;
pub const AIM_BYTES: u64 = 8_000_000;

/// The architectures we ship: (OCI / Debian name, Rust musl target).
pub const ARCHES: [(&str, &str); 2] = [
    ("amd64", "x86_64-unknown-linux-musl"),
    ("arm64", "aarch64-unknown-linux-musl"),
];

#[derive(Clone, Debug, Serialize)]
pub struct BinaryRow {
    pub arch: String,
    pub path: PathBuf,
    pub bytes: Cell<u64>,
    /// The same file after `llvm-strip --strip-all` of a copy.
    pub stripped_bytes: Cell<u64>,
    /// `bytes` / the 12 MB budget.
    pub vs_budget: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ImageRow {
    pub arch: String,
    /// Manifest + config + layers of this platform in the OCI index (compressed, as pulled).
    pub oci_pull_bytes: Cell<u64>,
    /// `ferrite-airgap-image-<arch>.tar.zst`.
    pub airgap_bytes: Cell<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SizesBench {
    pub budget_bytes: u64,
    pub aim_bytes: u64,
    pub binaries: Vec<BinaryRow>,
    pub images: Vec<ImageRow>,
}

impl SizesBench {
    pub fn incomplete(&self) -> bool {
        self.binaries
            .iter()
            .any(|b| b.bytes.is_not_run() || b.stripped_bytes.is_not_run())
            || self
                .images
                .iter()
                .any(|i| i.oci_pull_bytes.is_not_run() || i.airgap_bytes.is_not_run())
    }
}

fn file_size(path: &Path) -> Result<u64, String> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e} (run `make package`)", path.display()))
}

fn stripped_size(path: &Path, work: &Path) -> Result<u64, String> {
    let copy = work.join(format!(
        "stripped-{}",
        path.to_string_lossy().replace('/', "_")
    ));
    std::fs::copy(path, &copy).map_err(|e| format!("copy {}: {e}", path.display()))?;
    let out = Command::new("llvm-strip")
        .arg("--strip-all")
        .arg(&copy)
        .output()
        .map_err(|e| format!("llvm-strip: {e} (make setup installs LLVM)"))?;
    let size = file_size(&copy);
    let _ = std::fs::remove_file(&copy);
    if !out.status.success() {
        return Err(format!(
            "llvm-strip {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    size
}

/// Bytes a pull of each platform of an OCI index transfers: for every manifest of the index,
/// the manifest itself, its config and its layers (sizes as the descriptors state them).
/// `blob(digest)` returns a blob's JSON text.
pub fn oci_pull_sizes(
    index: &str,
    blob: &impl Fn(&str) -> Result<String, String>,
) -> Result<Vec<(String, u64)>, String> {
    let index: serde_json::Value =
        serde_json::from_str(index).map_err(|e| format!("index.json: {e}"))?;
    let manifests = index["manifests"]
        .as_array()
        .ok_or("index.json has no manifests")?;
    let mut out = Vec::new();
    for m in manifests {
        // An OCI layout's index.json may name the image's own index (the multi-arch one):
        // its manifests are the platforms.
        if m["mediaType"] == "application/vnd.oci.image.index.v1+json" {
            let digest = m["digest"]
                .as_str()
                .ok_or("an index entry without digest")?;
            out.extend(oci_pull_sizes(&blob(digest)?, blob)?);
            continue;
        }
        let arch = m["platform"]["architecture"]
            .as_str()
            .ok_or("an index entry without platform.architecture")?;
        let digest = m["digest"]
            .as_str()
            .ok_or("an index entry without digest")?;
        let own = m["size"].as_u64().ok_or("an index entry without size")?;
        let manifest: serde_json::Value =
            serde_json::from_str(&blob(digest)?).map_err(|e| format!("manifest {digest}: {e}"))?;
        let config = manifest["config"]["size"]
            .as_u64()
            .ok_or_else(|| format!("manifest {digest} has no config size"))?;
        let layers = manifest["layers"]
            .as_array()
            .ok_or_else(|| format!("manifest {digest} has no layers"))?
            .iter()
            .map(|l| l["size"].as_u64().ok_or("a layer without size"))
            .sum::<Result<u64, _>>()?;
        out.push((arch.to_owned(), own + config + layers));
    }
    Ok(out)
}

fn read_oci(layout: &Path) -> Result<Vec<(String, u64)>, String> {
    let index_path = layout.join("index.json");
    let index = std::fs::read_to_string(&index_path)
        .map_err(|e| format!("{}: {e} (run `make package`)", index_path.display()))?;
    oci_pull_sizes(&index, &|digest: &str| {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("digest {digest} is not sha256"))?;
        let p = layout.join("blobs/sha256").join(hex);
        std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
    })
}

/// Measures the files `make cross` and `make package` left under `target`.
pub fn measure(target: &Path, work: &Path) -> SizesBench {
    let binaries = ARCHES
        .iter()
        .map(|(arch, triple)| {
            let path = target.join(triple).join("release/ferrite");
            let bytes: Cell<u64> = file_size(&path).into();
            let stripped_bytes = match bytes {
                Cell::Value(_) => stripped_size(&path, work).into(),
                Cell::NotRun { .. } => Cell::not_run("no binary"),
            };
            #[expect(clippy::cast_precision_loss, reason = "sizes are far below 2^52")]
            let vs_budget = bytes.value().map(|b| *b as f64 / BUDGET_BYTES as f64);
            BinaryRow {
                arch: (*arch).to_owned(),
                path,
                bytes,
                stripped_bytes,
                vs_budget,
            }
        })
        .collect();
    let package = target.join("package");
    let oci = read_oci(&package.join("oci"));
    let images = ARCHES
        .iter()
        .map(|(arch, _)| {
            let oci_pull_bytes = match &oci {
                Ok(rows) => rows.iter().find(|(a, _)| a == arch).map_or_else(
                    || Cell::not_run(format!("no {arch} manifest in the OCI index")),
                    |(_, b)| Cell::Value(*b),
                ),
                Err(e) => Cell::not_run(e.clone()),
            };
            let airgap = package.join(format!("ferrite-airgap-image-{arch}.tar.zst"));
            ImageRow {
                arch: (*arch).to_owned(),
                oci_pull_bytes,
                airgap_bytes: file_size(&airgap).into(),
            }
        })
        .collect();
    SizesBench {
        budget_bytes: BUDGET_BYTES,
        aim_bytes: AIM_BYTES,
        binaries,
        images,
    }
}

#[expect(clippy::cast_precision_loss, reason = "sizes are far below 2^52")]
fn mb(c: &Cell<u64>) -> String {
    match c {
        Cell::Value(b) => format!("{:.2} MB ({b} B)", *b as f64 / 1e6),
        Cell::NotRun { not_run } => format!("not run: {not_run}"),
    }
}

fn verdict(bytes: &Cell<u64>) -> &'static str {
    match bytes.value() {
        Some(b) if *b <= AIM_BYTES => "within the aim",
        Some(b) if *b <= BUDGET_BYTES => "within the budget, above the aim",
        Some(_) => "OVER BUDGET",
        None => "–",
    }
}

pub fn markdown(b: &SizesBench, out: &mut String) {
    let _ = writeln!(out, "\n## Sizes\n");
    let _ = writeln!(
        out,
        "Static binaries (budget 12 MB, aim 8 MB; MB = 10^6 bytes) and the image per architecture.\n"
    );
    let _ = writeln!(
        out,
        "| arch | binary | stripped again | ×budget | verdict |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|");
    for r in &b.binaries {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.arch,
            mb(&r.bytes),
            mb(&r.stripped_bytes),
            r.vs_budget
                .map_or_else(|| "–".into(), |v| format!("{v:.2}×")),
            verdict(&r.bytes)
        );
    }
    let _ = writeln!(
        out,
        "\n| arch | image pull (compressed layers) | airgap .tar.zst |"
    );
    let _ = writeln!(out, "|---|---:|---:|");
    for r in &b.images {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            r.arch,
            mb(&r.oci_pull_bytes),
            mb(&r.airgap_bytes)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_size_sums_manifest_config_and_layers_per_platform() {
        let index = r#"{"manifests":[
            {"digest":"sha256:aa","size":400,"platform":{"architecture":"amd64","os":"linux"}},
            {"digest":"sha256:bb","size":410,"platform":{"architecture":"arm64","os":"linux"}}]}"#;
        let blob = |d: &str| match d {
            "sha256:aa" => {
                Ok(r#"{"config":{"size":500},"layers":[{"size":4000000},{"size":10}]}"#.to_owned())
            }
            "sha256:bb" => Ok(r#"{"config":{"size":501},"layers":[{"size":3500000}]}"#.to_owned()),
            other => Err(format!("no blob {other}")),
        };
        let got = oci_pull_sizes(index, &blob).unwrap();
        assert_eq!(
            got,
            vec![
                ("amd64".to_owned(), 400 + 500 + 4_000_010),
                ("arm64".to_owned(), 410 + 501 + 3_500_000)
            ]
        );
        assert!(oci_pull_sizes(r#"{"manifests":[{"digest":"sha256:cc","size":1,"platform":{"architecture":"amd64"}}]}"#, &blob).is_err());
        assert!(oci_pull_sizes("{}", &blob).is_err());
        // A layout whose index.json names the multi-arch index (what buildah/umoci write).
        let layout = r#"{"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:ii","size":854}]}"#;
        let nested = |d: &str| {
            if d == "sha256:ii" {
                Ok(index.to_owned())
            } else {
                blob(d)
            }
        };
        assert_eq!(oci_pull_sizes(layout, &nested).unwrap(), got);
    }

    #[test]
    fn missing_files_are_not_run_rows_and_make_the_section_incomplete() {
        let dir = std::env::temp_dir().join(format!("ferrite-sizes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let b = measure(&dir.join("no-target"), &dir);
        assert!(b.incomplete());
        assert!(b.binaries.iter().all(|r| r.bytes.is_not_run()));
        let mut md = String::new();
        markdown(&b, &mut md);
        assert!(md.contains("make package"), "{md}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn verdicts_follow_budget_and_aim() {
        assert_eq!(verdict(&Cell::Value(7_999_999)), "within the aim");
        assert_eq!(
            verdict(&Cell::Value(11_346_544)),
            "within the budget, above the aim"
        );
        assert_eq!(verdict(&Cell::Value(12_000_001)), "OVER BUDGET");
    }
}
