use super::*;

#[test]
fn blocks_parse_like_cilium() {
    assert_eq!(
        IpBlock::parse(Some("10.0.0.7/24"), None, None)
            .unwrap()
            .to_string(),
        "10.0.0.0/24",
        "host bits are cleared"
    );
    let single = IpBlock::parse(None, Some("10.0.0.5"), None).unwrap();
    assert_eq!(
        single.bounds(),
        ("10.0.0.5".parse().unwrap(), "10.0.0.5".parse().unwrap())
    );
    assert_eq!(single.to_string(), "10.0.0.5");
    let range = IpBlock::parse(None, Some("fd00::1"), Some("fd00::9")).unwrap();
    assert_eq!(range.family(), IpFamily::V6);
    assert_eq!(range.to_string(), "fd00::1-fd00::9");
}

#[test]
fn bad_blocks_say_what_is_wrong() {
    let err = |cidr, start, stop| IpBlock::parse(cidr, start, stop).unwrap_err();
    assert!(matches!(
        err(Some("10.0.0.0/33"), None, None),
        BlockError::BadCidr(_)
    ));
    assert!(matches!(
        err(Some("banana"), None, None),
        BlockError::BadCidr(_)
    ));
    assert_eq!(
        err(None, Some("10.0.0.9"), Some("10.0.0.1")),
        BlockError::StartAfterStop {
            start: "10.0.0.9".parse().unwrap(),
            stop: "10.0.0.1".parse().unwrap()
        }
    );
    assert!(matches!(
        err(None, Some("10.0.0.1"), Some("fd00::1")),
        BlockError::MixedFamilies { .. }
    ));
    assert!(matches!(
        err(None, Some("10.0.0.x"), None),
        BlockError::BadAddress { field: "start", .. }
    ));
    assert_eq!(
        err(Some("10.0.0.0/24"), Some("10.0.0.1"), None),
        BlockError::CidrAndRange
    );
    assert_eq!(
        err(None, None, Some("10.0.0.1")),
        BlockError::StopWithoutStart
    );
    assert_eq!(err(None, Some(" "), None), BlockError::Empty);
}

#[test]
fn requirements_are_validated() {
    assert_eq!(
        LabelRequirement::new("a", "Equals", vec![]),
        Err(SelectorError::UnknownOperator("Equals".into()))
    );
    assert_eq!(
        LabelRequirement::new("a", "In", vec![]),
        Err(SelectorError::NoValues("In"))
    );
    assert_eq!(
        LabelRequirement::new("a", "Exists", vec!["x".into()]),
        Err(SelectorError::UnexpectedValues("Exists"))
    );
    assert_eq!(
        LabelRequirement::new("", "Exists", vec![]),
        Err(SelectorError::EmptyKey)
    );
}

#[test]
fn selectors_and_match_labels() {
    let selector = LabelSelector {
        match_labels: [("app".into(), "dns".into())].into(),
        match_expressions: vec![LabelRequirement::new("env", "NotIn", vec!["dev".into()]).unwrap()],
    };
    let labels = |pairs: &'static [(&'static str, &'static str)]| {
        move |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    };
    assert!(selector.matches(labels(&[("app", "dns")])));
    assert!(selector.matches(labels(&[("app", "dns"), ("env", "prod")])));
    assert!(!selector.matches(labels(&[("app", "dns"), ("env", "dev")])));
    assert!(!selector.matches(labels(&[("app", "web")])));
    assert!(LabelSelector::default().matches(labels(&[])));
}

#[test]
fn service_condition_follows_the_reason() {
    let mut status = ServiceIpamStatus {
        service: ServiceName::new("ns", "web"),
        addresses: vec![AllocatedIp {
            ip: "10.0.0.1".parse().unwrap(),
            pool: "lan".into(),
        }],
        reason: IpamReason::Satisfied,
        message: "allocated".into(),
    };
    let condition = status.condition();
    assert_eq!(condition.condition_type, IPAM_REQUEST_SATISFIED);
    assert_eq!(
        (condition.status, condition.reason.as_str()),
        (ConditionStatus::True, "satisfied")
    );
    assert_eq!(status.ingress(), ["10.0.0.1".parse::<IpAddr>().unwrap()]);
    status.reason = IpamReason::SharingConflict;
    let condition = status.condition();
    assert_eq!(
        (condition.status, condition.reason.as_str()),
        (ConditionStatus::False, "sharing_conflict")
    );
}

#[test]
fn pool_conditions_carry_counts_conflict_and_problems() {
    let status = PoolStatus {
        name: "lan".into(),
        total: 254,
        used: 4,
        available: 250,
        conflict: Some("overlaps".into()),
        problems: vec![PoolProblem {
            field: "spec.blocks[0]".into(),
            message: "bad".into(),
        }],
        disabled: false,
    };
    let conditions = status.conditions();
    let find = |kind| {
        conditions
            .iter()
            .find(|c| c.condition_type == kind)
            .unwrap()
    };
    assert_eq!(find(POOL_IPS_TOTAL).message, "254");
    assert_eq!(find(POOL_IPS_AVAILABLE).message, "250");
    assert_eq!(find(POOL_IPS_USED).message, "4");
    assert_eq!(find(POOL_CONFLICT).status, ConditionStatus::True);
    assert_eq!(find(POOL_INVALID_SPEC).message, "spec.blocks[0]: bad");
    let serialized = serde_json::to_value(find(POOL_CONFLICT)).unwrap();
    assert_eq!(serialized["type"], "ferrite.dev/PoolConflict");
    assert_eq!(serialized["status"], "True");
}
