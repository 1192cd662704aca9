use super::*;

fn user_env() -> Environment {
    Environment {
        home: Some("/home/u".into()),
        uid: 1000,
        ..Environment::default()
    }
}

fn root_env() -> Environment {
    Environment {
        home: Some("/root".into()),
        uid: 0,
        ..Environment::default()
    }
}

fn parse(text: &str) -> Result<Config> {
    Config::parse(text, Path::new("/etc/strata/strata.toml"), &root_env())
}

#[test]
fn defaults_for_root() {
    let c = Config::defaults(&root_env()).unwrap();
    assert_eq!(c.root, Path::new("/var/lib/strata"));
    assert_eq!(c.runroot, Path::new("/run/strata"));
    assert_eq!(c.driver, AUTO);
    assert_eq!(c.drivers, DriversConfig::default());
    assert_eq!(c.drivers.dir.mount, DirMountMode::Auto);
    assert_eq!(c.drivers.block.size, 10 << 30);
    assert_eq!(c.drivers.block.fs, BlockFs::Ext4);
    assert!(c.plugins.is_empty());
    assert_eq!(c.file, None);
}

#[test]
fn defaults_for_a_user() {
    let mut env = user_env();
    let c = Config::defaults(&env).unwrap();
    assert_eq!(c.root, Path::new("/home/u/.local/share/strata"));
    assert_eq!(c.runroot, Path::new("/tmp/strata-1000"));

    env.xdg_data_home = Some("/data".into());
    env.xdg_runtime_dir = Some("/run/user/1000".into());
    let c = Config::defaults(&env).unwrap();
    assert_eq!(c.root, Path::new("/data/strata"));
    assert_eq!(c.runroot, Path::new("/run/user/1000/strata"));

    env.xdg_data_home = None;
    env.home = None;
    let err = Config::defaults(&env).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[test]
fn every_key_parses() {
    let c = parse(
        r#"
root = "/srv/strata"
runroot = "/run/s"
driver = "overlay"

[drivers.dir]
mount = "copy"

[drivers.overlay]
mount_options = ["nodev", "metacopy=on"]

[drivers.block]
size = "1.5G"
fs = "xfs"

[[plugins]]
path = "/usr/lib/strata/plugins/libstrata_driver_vfs.so"
[plugins.options]
mode = "fast"
level = 3
sync = true

[[plugins]]
path = "/opt/other.so"
"#,
    )
    .unwrap();
    assert_eq!(c.root, Path::new("/srv/strata"));
    assert_eq!(c.runroot, Path::new("/run/s"));
    assert_eq!(c.driver, "overlay");
    assert_eq!(c.drivers.dir.mount, DirMountMode::Copy);
    assert_eq!(c.drivers.overlay.mount_options, ["nodev", "metacopy=on"]);
    assert_eq!(c.drivers.block.size, 3 << 29);
    assert_eq!(c.drivers.block.fs, BlockFs::Xfs);
    assert_eq!(c.plugins.len(), 2);
    assert_eq!(
        c.plugins[0].path,
        Path::new("/usr/lib/strata/plugins/libstrata_driver_vfs.so")
    );
    let opts: Vec<_> = c.plugins[0]
        .options
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert_eq!(opts, ["level=3", "mode=fast", "sync=true"]);
    assert!(c.plugins[1].options.is_empty());
    assert_eq!(
        c.file.as_deref(),
        Some(Path::new("/etc/strata/strata.toml"))
    );
}

#[test]
fn empty_file_is_the_defaults() {
    let c = parse("").unwrap();
    let d = Config::defaults(&root_env()).unwrap();
    assert_eq!(c.root, d.root);
    assert_eq!(c.runroot, d.runroot);
    assert_eq!(c.driver, AUTO);
    assert_eq!(c.drivers, d.drivers);
    assert_eq!(c.drivers.block.size, DEFAULT_BLOCK_SIZE);
}

#[test]
fn unknown_keys_name_the_key_and_the_file() {
    for (text, key, line) in [
        ("[drivers.dir]\nmout = \"fuse\"\n", "drivers.dir.mout", 2),
        ("rot = \"/x\"\n", "rot", 1),
        ("[drivers.zfs]\nsize = 1\n", "drivers.zfs", 1),
        (
            "[[plugins]]\npath = \"/a.so\"\nopts = 1\n",
            "plugins[0].opts",
            3,
        ),
        (
            "[drivers.block]\nsize = \"1G\"\nfstype = \"xfs\"\n",
            "drivers.block.fstype",
            3,
        ),
    ] {
        let err = parse(text).expect_err(text);
        assert_eq!(err.kind(), ErrorKind::Config, "{text}");
        // The message is the feature here: one line naming file, line and full key.
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.starts_with("/etc/strata/strata.toml:"), "{msg}");
        assert!(msg.contains(&format!("`{key}`")), "{key}: {msg}");
        assert!(msg.contains(&format!(":{line}:")), "{line}: {msg}");
    }
}

#[test]
fn bad_values_are_config_errors() {
    for text in [
        "root = \"relative/dir\"",
        "runroot = 3",
        "driver = \"../evil\"",
        "driver = \"\"",
        "[drivers.dir]\nmount = \"fusee\"",
        "[drivers.block]\nsize = \"10X\"",
        "[drivers.block]\nsize = \"0\"",
        "[drivers.block]\nsize = -1",
        "[drivers.block]\nfs = \"btrfs\"",
        "[drivers.overlay]\nmount_options = [\"a,b\"]",
        "[drivers.overlay]\nmount_options = \"nodev\"",
        "[[plugins]]\npath = \"rel.so\"",
        "[[plugins]]\noptions = {}",
        "root = ",
        "[drivers\n",
    ] {
        let err = parse(text).expect_err(text);
        assert_eq!(err.kind(), ErrorKind::Config, "{text}");
        assert!(!err.to_string().contains('\n'), "{text}: {err}");
    }
}

#[test]
fn search_order() {
    let mut env = user_env();
    let paths = |o: &Overrides, e: &Environment| -> Vec<(PathBuf, bool)> {
        search_path(o, e)
            .into_iter()
            .map(|c| (c.path, c.required))
            .collect()
    };
    let none = Overrides::default();
    assert_eq!(
        paths(&none, &env),
        [
            ("/home/u/.config/strata/strata.toml".into(), false),
            ("/etc/strata/strata.toml".into(), false)
        ]
    );
    env.xdg_config_home = Some("/cfg".into());
    assert_eq!(
        paths(&none, &env)[0],
        ("/cfg/strata/strata.toml".into(), false)
    );
    env.strata_config = Some("/env.toml".into());
    assert_eq!(paths(&none, &env), [("/env.toml".into(), true)]);
    let flag = Overrides {
        config: Some("/flag.toml".into()),
        ..Overrides::default()
    };
    assert_eq!(paths(&flag, &env), [("/flag.toml".into(), true)]);

    let bare = Environment {
        uid: 1000,
        ..Environment::default()
    };
    assert_eq!(
        paths(&none, &bare),
        [("/etc/strata/strata.toml".into(), false)]
    );
}

#[test]
fn overrides_apply_in_order() {
    let mut env = root_env();
    let mut c = parse("driver = \"dir\"\nroot = \"/a\"").unwrap();
    c.apply(&Overrides::default(), &env).unwrap();
    assert_eq!(c.driver, "dir");

    env.strata_driver = Some("overlay".into());
    c.apply(&Overrides::default(), &env).unwrap();
    assert_eq!(c.driver, "overlay");

    let flags = Overrides {
        driver: Some("block".into()),
        root: Some("/b".into()),
        runroot: Some("/r".into()),
        config: None,
    };
    c.apply(&flags, &env).unwrap();
    assert_eq!(c.driver, "block");
    assert_eq!(c.root, Path::new("/b"));
    assert_eq!(c.runroot, Path::new("/r"));

    let bad = Overrides {
        root: Some("rel".into()),
        ..Overrides::default()
    };
    assert_eq!(c.apply(&bad, &env).unwrap_err().kind(), ErrorKind::Config);
}

#[test]
fn load_reads_the_first_file_found() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Environment {
        xdg_config_home: Some(tmp.path().into()),
        uid: 1000,
        home: Some("/home/u".into()),
        ..Environment::default()
    };
    // No user file: /etc may or may not exist on this host, so only the explicit cases are
    // checked against real files.
    let missing = Overrides {
        config: Some(tmp.path().join("nope.toml")),
        ..Overrides::default()
    };
    let err = Config::load_with(&missing, &env).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);

    std::fs::create_dir_all(tmp.path().join("strata")).unwrap();
    let user = tmp.path().join("strata/strata.toml");
    std::fs::write(&user, "root = \"/from/user\"\n").unwrap();
    let c = Config::load_with(&Overrides::default(), &env).unwrap();
    assert_eq!(c.root, Path::new("/from/user"));
    assert_eq!(c.file.as_deref(), Some(user.as_path()));

    let explicit = tmp.path().join("x.toml");
    std::fs::write(
        &explicit,
        "driver = \"dir\"\n[drivers.dir]\nmount = \"fuse\"\n",
    )
    .unwrap();
    let flags = Overrides {
        config: Some(explicit.clone()),
        ..Overrides::default()
    };
    let c = Config::load_with(&flags, &env).unwrap();
    assert_eq!(c.driver, "dir");
    assert_eq!(c.root, Path::new("/home/u/.local/share/strata"));
    assert_eq!(c.drivers.dir.mount, DirMountMode::Fuse);

    std::fs::write(&explicit, "[drivers.dir]\nmout = \"fuse\"\n").unwrap();
    let err = Config::load_with(&flags, &env).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains(&explicit.display().to_string()));
}

/// Issue 12, item 11: a runroot that is the root, or inside it (or the other way round), is
/// refused before anything is made: start-up cleanup of one would delete the other's files.
#[test]
fn root_and_runroot_must_be_apart() {
    let with = |root: &str, runroot: &str| {
        let mut c = Config::defaults(&root_env()).unwrap();
        c.root = root.into();
        c.runroot = runroot.into();
        c.validate()
    };
    for (root, runroot) in [
        ("/var/lib/strata", "/var/lib/strata"),
        ("/var/lib/strata", "/var/lib/strata/"),
        ("/var/lib/strata", "/var/lib/strata/./dir/diff"),
        ("/run/strata/root", "/run/strata"),
    ] {
        let err = with(root, runroot).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{root} {runroot}");
        assert!(err.to_string().contains("must be apart"), "{err}");
    }
    with("/var/lib/strata", "/run/strata").unwrap();
    with("/var/lib/strata", "/var/lib/strata-run").unwrap();
}

/// Issue 12, item 11: two roots sharing one runroot keep their mount state apart.
#[test]
fn run_dirs_are_keyed_by_root() {
    let mut a = Config::defaults(&root_env()).unwrap();
    let mut b = a.clone();
    a.root = "/srv/a".into();
    b.root = "/srv/b".into();
    assert_ne!(a.run_dir("dir"), b.run_dir("dir"));
    assert!(a.run_dir("dir").starts_with(&a.runroot));
    assert!(a.run_dir("dir").ends_with("dir-layers"));
    // The same root, spelt with a trailing slash, is the same store.
    b.root = "/srv/a/".into();
    assert_eq!(a.run_dir("dir"), b.run_dir("dir"));
}

#[test]
fn limits_parse_with_sizes_and_default() {
    let c = parse("[limits]\nmax_layer_size = \"2G\"\n").unwrap();
    assert_eq!(c.limits.max_layer_size, 2 << 30);
    assert_eq!(c.limits.max_trailing, Limits::default().max_trailing);
    let c = parse("").unwrap();
    assert_eq!(c.limits, Limits::default());
    let err = parse("[limits]\nmax_entries = 5\n").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("max_entries"), "{err}");
}
