use std::path::PathBuf;

use crate::source::{SourceSpec, SourceSpecError};

#[test]
fn source_spec_parses_dir_and_kube() {
    assert_eq!(
        "dir:/etc/ferrite/manifests".parse(),
        Ok(SourceSpec::Dir(PathBuf::from("/etc/ferrite/manifests")))
    );
    assert_eq!(
        "dir:relative/path".parse(),
        Ok(SourceSpec::Dir(PathBuf::from("relative/path")))
    );
    assert_eq!("kube".parse(), Ok(SourceSpec::Kube));
}

#[test]
fn source_spec_rejects_empty_path_and_unknown_sources() {
    assert_eq!(
        "dir:".parse::<SourceSpec>(),
        Err(SourceSpecError::EmptyPath)
    );
    assert_eq!(
        "file:/x".parse::<SourceSpec>(),
        Err(SourceSpecError::Unknown("file:/x".into()))
    );
    assert_eq!(
        "".parse::<SourceSpec>(),
        Err(SourceSpecError::Unknown(String::new()))
    );
    assert_eq!(
        "kube:x".parse::<SourceSpec>(),
        Err(SourceSpecError::Unknown("kube:x".into()))
    );
}

#[test]
fn source_spec_display_round_trips() {
    for text in ["dir:/srv/manifests", "kube"] {
        let spec: SourceSpec = text.parse().expect("valid spec");
        assert_eq!(spec.to_string(), text);
    }
}
