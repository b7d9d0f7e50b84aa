use super::*;

const T0: i64 = 1_900_000_000;

fn policy() -> PkiPolicy {
    let mut request = CertRequest::new("whisperer-injector", "whisperer-system");
    request.extra_ips = vec!["127.0.0.1".parse().expect("ip")];
    PkiPolicy {
        request,
        cert_lifetime: certs_gen::Duration::seconds(90),
        ca_lifetime: certs_gen::Duration::seconds(300),
        overlap: certs_gen::Duration::seconds(10),
    }
}

fn at(t: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t).expect("time")
}

/// The step the leader takes at `t`, and the Secret after it (unchanged on a wait).
fn run(
    data: Option<&BTreeMap<String, Vec<u8>>>,
    t: i64,
    published: bool,
) -> (Step, BTreeMap<String, Vec<u8>>) {
    let pki = data.map(Pki::parse);
    let step = next_step(pki.as_ref().map(|r| r.as_ref()), &policy(), t, published);
    let base = pki.and_then(Result::ok);
    let out = match &step {
        Step::Write(change) => apply(change, base.as_ref(), &policy(), at(t)).expect("apply"),
        Step::Wait(_) => data.cloned().expect("a wait needs a Secret"),
    };
    (step, out)
}

fn parsed(d: &BTreeMap<String, Vec<u8>>) -> Pki {
    Pki::parse(d).expect("the written Secret parses")
}

#[test]
fn a_missing_secret_is_created_and_then_left_alone() {
    let (step, data) = run(None, T0, false);
    assert!(matches!(step, Step::Write(Change::Create(_))), "{step:?}");
    let p = parsed(&data);
    assert_eq!(p.trusted_cas(), 1);
    assert!(p.leaf_from_newest());
    assert_eq!(p.serving_not_after(), T0 + 90);
    assert_eq!(
        next_step(Some(Ok(&p)), &policy(), T0 + 1, false),
        Step::Wait(59)
    );
}

#[test]
fn the_serving_certificate_is_renewed_at_two_thirds_from_the_same_ca() {
    let (_, data) = run(None, T0, true);
    let (step, renewed) = run(Some(&data), T0 + 60, true);
    assert_eq!(
        step,
        Step::Write(Change::IssueLeaf(
            "the serving certificate is two-thirds through its life"
        ))
    );
    assert_eq!(renewed[CA_CRT], data[CA_CRT], "the bundle does not change");
    assert_ne!(renewed[TLS_CRT], data[TLS_CRT]);
    assert_eq!(parsed(&renewed).serving_not_after(), T0 + 150);
}

#[test]
fn a_ca_roll_keeps_both_cas_trusted_while_the_serving_certificate_moves() {
    let (_, mut data) = run(None, T0, true);
    // Renew the serving certificate until the CA itself is due (2/3 of 300 s).
    let mut t = T0;
    loop {
        t += 1;
        let (step, next) = run(Some(&data), t, true);
        data = next;
        if step == Step::Write(Change::RollCa) {
            break;
        }
        assert!(t < T0 + 300, "the CA was never rolled");
    }
    assert_eq!(t, T0 + 200);
    let old_leaf = data[TLS_CRT].clone();
    let p = parsed(&data);
    assert_eq!(p.trusted_cas(), 2, "old and new CA both trusted");
    assert!(
        !p.leaf_from_newest(),
        "still serving the old CA's certificate"
    );
    // Not published yet: keep checking every second, serve the old certificate.
    assert_eq!(
        next_step(Some(Ok(&p)), &policy(), t + 30, false),
        Step::Wait(1)
    );
    // Published: wait out the overlap, then move.
    assert_eq!(
        next_step(Some(Ok(&p)), &policy(), t + 3, true),
        Step::Wait(7)
    );
    let (step, moved) = run(Some(&data), t + 10, true);
    assert_eq!(step, Step::Write(Change::IssueLeaf("moving to the new CA")));
    assert_ne!(moved[TLS_CRT], old_leaf);
    let p = parsed(&moved);
    assert!(p.leaf_from_newest());
    assert_eq!(p.trusted_cas(), 2, "the old CA stays for the overlap");
    assert_eq!(
        next_step(Some(Ok(&p)), &policy(), t + 15, true),
        Step::Wait(5)
    );
    let (step, done) = run(Some(&moved), t + 20, true);
    assert_eq!(step, Step::Write(Change::DropOldCas));
    let p = parsed(&done);
    assert_eq!(p.trusted_cas(), 1);
    assert!(p.leaf_from_newest());
    assert_eq!(done[TLS_CRT], moved[TLS_CRT]);
}

#[test]
fn changed_names_reissue_the_serving_certificate() {
    let (_, data) = run(None, T0, true);
    let mut other = policy();
    other.request.extra_dns = vec!["hooks.example.com".into()];
    let p = parsed(&data);
    assert_eq!(
        next_step(Some(Ok(&p)), &other, T0 + 1, true),
        Step::Write(Change::IssueLeaf(
            "the serving certificate's names differ from the flags"
        ))
    );
}

#[test]
fn broken_contents_name_the_key_and_start_over() {
    let (_, data) = run(None, T0, true);
    let mut no_key = data.clone();
    no_key.remove(CA_KEY);
    assert_eq!(Pki::parse(&no_key).err(), Some(PkiError::Missing(CA_KEY)));
    let mut junk = data.clone();
    junk.insert(TLS_CRT.into(), b"junk".to_vec());
    let e = Pki::parse(&junk).expect_err("junk is refused");
    assert!(e.to_string().contains("tls.crt"), "{e}");
    let (_, other) = run(None, T0, true);
    let mut foreign = data.clone();
    foreign.insert(CA_KEY.into(), other[CA_KEY].clone());
    let e = Pki::parse(&foreign).expect_err("a foreign CA key is refused");
    assert!(e.to_string().contains("ca.key"), "{e}");
    let (step, fresh) = run(Some(&foreign), T0 + 1, true);
    assert!(matches!(step, Step::Write(Change::Create(_))), "{step:?}");
    assert!(Pki::parse(&fresh).is_ok());
}

#[test]
fn a_serving_certificate_from_an_untrusted_ca_is_replaced_at_once() {
    let (_, data) = run(None, T0, true);
    let (_, other) = run(None, T0, true);
    let mut mixed = data.clone();
    mixed.insert(TLS_CRT.into(), other[TLS_CRT].clone());
    mixed.insert(TLS_KEY.into(), other[TLS_KEY].clone());
    let (step, fixed) = run(Some(&mixed), T0 + 1, true);
    assert!(
        matches!(step, Step::Write(Change::IssueLeaf(_))),
        "{step:?}"
    );
    assert!(parsed(&fixed).leaf_from_newest());
}
