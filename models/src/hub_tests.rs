//! Unit tests of `hub` (kept beside it, in their own file for length).
use super::*;

#[test]
fn parses_specs() {
    assert_eq!(
        "org/name@abc".parse::<ModelSpec>().unwrap(),
        ModelSpec::Hub {
            id: "org/name".into(),
            revision: "abc".into(),
            file: None,
        }
    );
    assert_eq!(
        "org/name-GGUF@v1:model.Q4_1.gguf"
            .parse::<ModelSpec>()
            .unwrap(),
        ModelSpec::Hub {
            id: "org/name-GGUF".into(),
            revision: "v1".into(),
            file: Some("model.Q4_1.gguf".into()),
        }
    );
    assert_eq!(
        "gpt2".parse::<ModelSpec>().unwrap(),
        ModelSpec::Hub {
            id: "gpt2".into(),
            revision: "main".into(),
            file: None,
        }
    );
    assert_eq!(
        "./dir".parse::<ModelSpec>().unwrap(),
        ModelSpec::Local("./dir".into())
    );
    assert!("org/na me".parse::<ModelSpec>().is_err());
    assert!("org/name@".parse::<ModelSpec>().is_err());
    assert!("a/b/c".parse::<ModelSpec>().is_err());
}

#[test]
fn revision_from_snapshot_path() {
    let p = Path::new("/c/hub/models--a--b/snapshots/0123abc/config.json");
    assert_eq!(snapshot_revision(p).as_deref(), Some("0123abc"));
    assert_eq!(snapshot_revision(Path::new("/x/config.json")), None);
}

#[test]
fn resolves_from_a_hf_layout_cache() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("hub/models--org--tiny");
    let snap = repo_dir.join("snapshots/feedbeef");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), "feedbeef").unwrap();
    for f in [CONFIG, TOKENIZER, WEIGHTS] {
        std::fs::write(snap.join(f), "x").unwrap();
    }
    let cache = Cache::new(dir.path().join("hub"));
    let repo = Repo::with_revision("org/tiny".into(), RepoType::Model, "main".into());
    let p = cached_file(&cache, &repo, "main", CONFIG).unwrap();
    assert_eq!(snapshot_revision(&p).as_deref(), Some("feedbeef"));
    let by_sha = Repo::with_revision("org/tiny".into(), RepoType::Model, "feedbeef".into());
    assert!(cached_file(&cache, &by_sha, "feedbeef", WEIGHTS).is_some());
    assert!(cached_file(&cache, &repo, "main", "missing.bin").is_none());
}
